"""The one weights loader every model runtime uses (numpy-free, torch-free).

A model's weights live in one folder with a model card (JSON, :class:`ModelCard`): the shipped
``models/<model>/weights`` folder, or ``<settings.models_dir>/<model>`` when a site points
``models_dir`` elsewhere. :func:`load_weights` reads and validates the card, checks that every file
the runtime needs exists and that EVERY file the card lists in ``weights_sha256`` has that
checksum, and raises :class:`ModelUnavailable` (something missing) or :class:`InvalidWeights`
(something present but wrong) naming the file and what was expected.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cds.contracts.cards import ModelCard
from cds.contracts.errors import InvalidWeights, ModelUnavailable
from cds.contracts.settings import Settings

MODELS_ROOT = Path(__file__).resolve().parent
TRAIN_HINT = "run `cds train synthetic`"


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes (what a card's ``weights_sha256`` records)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def shipped_dir(model: str) -> Path:
    """The weights shipped with the project for ``model`` (``models/<model>/weights``)."""
    return MODELS_ROOT / model / "weights"


def weights_dir(settings: Settings, model: str, *, also_root_if_has: str | None = None) -> Path:
    """Where ``model``'s weights are: ``<models_dir>/<model>`` when ``settings.models_dir`` is set,
    else the shipped folder. With ``also_root_if_has``, ``models_dir`` itself is accepted too when
    that file is there and not in ``<models_dir>/<model>``."""
    if not settings.models_dir:
        return shipped_dir(model)
    base = Path(settings.models_dir)
    if also_root_if_has:
        for cand in (base / model, base):
            if (cand / also_root_if_has).is_file():
                return cand
    return base / model


def _require(folder: Path, names: list[str], model: str, card_name: str, hint: str) -> None:
    missing = [n for n in dict.fromkeys(names) if not (folder / n).is_file()]
    if missing:
        raise ModelUnavailable(
            f"{model} weights not found in {folder}: {', '.join(missing)} missing "
            f"(the runtime needs them with {card_name}; {hint})")


@dataclass(frozen=True)
class VerifiedWeights:
    """A weights folder whose card was read and whose files were checked against it."""

    folder: Path
    card: ModelCard
    card_path: Path

    def path(self, name: str) -> Path:
        return self.folder / name


def load_weights(
    folder: Path,
    card_name: str,
    *,
    model: str,
    files: Sequence[str] | Callable[[ModelCard], Sequence[str]] = (),
    hint: str = TRAIN_HINT,
) -> VerifiedWeights:
    """Read ``folder/card_name`` and verify the weight files against it.

    ``files`` are the files the runtime opens (or a function of the card giving them); each must
    exist and have a checksum in the card. Every file the card lists in ``weights_sha256`` must
    exist and match its checksum.
    """
    folder = Path(folder)
    card_path = folder / card_name
    static = [] if callable(files) else list(files)
    _require(folder, [*static, card_name], model, card_name, hint)
    try:
        card = ModelCard.read(card_path)
    except Exception as exc:
        raise InvalidWeights(f"{model} model card {card_path} is not a valid model card: {exc}") from exc
    try:
        needed = list(files(card)) if callable(files) else static
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidWeights(f"{model} model card {card_path} does not name its weight files: {exc}") from exc
    _require(folder, [*needed, *card.weights_sha256], model, card_name, hint)
    unlisted = [n for n in needed if n not in card.weights_sha256]
    if unlisted:
        raise InvalidWeights(
            f"{model} model card {card_path} records no sha256 for {', '.join(unlisted)} "
            "(weights_sha256 must list every weight file)")
    for name, expected in card.weights_sha256.items():
        actual = sha256_file(folder / name)
        if actual != expected:
            raise InvalidWeights(
                f"{model} weights {folder / name} do not match their card {card_path.name} "
                f"(sha256 {actual[:12]}..., card expects {expected[:12]}...)")
    return VerifiedWeights(folder=folder, card=card, card_path=card_path)
