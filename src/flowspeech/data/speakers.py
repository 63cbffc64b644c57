"""Speaker table: speaker labels <-> embedding ids, stored in checkpoints."""

from __future__ import annotations

from typing import Any, Iterable

from flowspeech.errors import ConfigError


class SpeakerTable:
    """A fixed mapping between speaker names and the integer ids a model's embedding uses.

    Id ``i`` is ``names[i]``. The order never depends on file order: :meth:`from_labels`
    sorts names, except that purely numeric labels (VITS filelists write the speaker id,
    ``path|sid|text``) keep their value as the id, ``"k" -> k``, so that checkpoints trained
    on those filelists by the authors' code keep their speaker ids; numbers that do not occur
    still take an id (an unused embedding row, as in VITS).

    Args:
        names: speaker names, one per id; unique and non-empty.
    """

    def __init__(self, names: Iterable[str]):
        self._names = [str(n) for n in names]
        if any(not n for n in self._names):
            raise ConfigError("speaker names must be non-empty strings")
        if len(set(self._names)) != len(self._names):
            dupes = sorted({n for n in self._names if self._names.count(n) > 1})
            raise ConfigError(f"speaker names must be unique; repeated: {', '.join(dupes)}")
        self._ids = {name: i for i, name in enumerate(self._names)}

    @classmethod
    def from_labels(cls, labels: Iterable[str | None]) -> SpeakerTable:
        """Build a table from the speaker labels of a dataset (``None`` labels ignored)."""
        distinct = sorted({str(label) for label in labels if label is not None})
        if distinct and all(label.isdigit() for label in distinct):
            numbers = {int(label): label for label in distinct}
            if len(numbers) == len(distinct):  # "01" and "1" would collide
                return cls(numbers.get(i, str(i)) for i in range(max(numbers) + 1))
        return cls(distinct)

    @property
    def names(self) -> list[str]:
        """Speaker names in id order."""
        return list(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._ids

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SpeakerTable) and self._names == other._names

    def __repr__(self) -> str:
        shown = ", ".join(self._names[:5]) + (", ..." if len(self) > 5 else "")
        return f"SpeakerTable({len(self)} speakers: {shown})"

    def id(self, name: str | None) -> int:
        """The id of ``name``; ``None`` (single-speaker data) is id 0.

        Raises:
            ConfigError: unknown speaker; the message lists the known ones.
        """
        if name is None:
            return 0
        try:
            return self._ids[str(name)]
        except KeyError:
            known = ", ".join(self._names[:20]) or "(none)"
            if len(self) > 20:
                known += f", ... ({len(self)} in all)"
            raise ConfigError(f"unknown speaker {name!r}; known speakers: {known}") from None

    def name(self, speaker_id: int) -> str:
        """The name of id ``speaker_id``.

        Raises:
            ConfigError: id out of range.
        """
        if not 0 <= int(speaker_id) < len(self):
            raise ConfigError(
                f"speaker id {speaker_id} out of range: the table has {len(self)} speakers"
            )
        return self._names[int(speaker_id)]

    def to_dict(self) -> dict[str, Any]:
        """Plain data for a checkpoint."""
        return {"names": list(self._names)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpeakerTable:
        """Inverse of :meth:`to_dict`.

        Raises:
            ConfigError: missing or unknown keys.
        """
        if not isinstance(data, dict):
            kind = type(data).__name__
            raise ConfigError(f"a speaker table is a dict {{'names': [...]}}, got {kind}")
        unknown = sorted(set(data) - {"names"})
        if unknown or "names" not in data:
            raise ConfigError(
                "a speaker table is {'names': [...]}; "
                + (f"unknown key(s) {unknown}" if unknown else "'names' is missing")
            )
        return cls(data["names"])
