"""Loading a saved model as it was reported: a run's ``model.pt`` comes back with the AppMuls (and corrections) of
the ``assignment.json`` and ``library/`` written beside it, not silently on exact multipliers."""

from __future__ import annotations

import warnings
from pathlib import Path

from torch import nn

from fames.appmul.library import Library
from fames.errors import FamesError
from fames.flow.outdir import check_complete
from fames.method.assignment import load_assignment, substitute


def load_model(checkpoint: str | Path | None, model: str | nn.Module | None = None, *, exact: bool = False,
               library: str | Path | Library | None = None, assignment: str | Path | None = None,
               num_classes: int | None = None) -> nn.Module:
    """A checkpoint as a model ready to evaluate (eval mode), as it was reported.

    ``checkpoint``: a ``.pt`` file (``fames train``, ``fames run``, ``FamesResult.save``) or a run's output folder
    (its ``model.pt``); ``model``: a zoo name, ``package.module:factory`` or your own ``nn.Module`` (float or
    quantized; it is quantized with the checkpoint's config and loaded in place), needed when the checkpoint does
    not name its architecture. A run's model comes with the AppMuls it was saved with (``assignment.json`` and
    ``library/`` beside it); ``exact`` leaves exact multipliers in their place; ``assignment`` and ``library``
    (a folder or a :class:`Library`) put other AppMuls in.
    """
    from fames.models import load_checkpoint_file, load_state_dict_checked
    from fames.quant import qlayers, quantize
    from fames.quant.config import differences
    from fames.train import load_model as load_zoo_model

    if checkpoint is not None and Path(checkpoint).is_dir():
        checkpoint = Path(checkpoint) / "model.pt"
    if checkpoint is not None:
        check_complete(Path(checkpoint).parent)
    if isinstance(model, nn.Module):
        if checkpoint is None:
            raise FamesError("load_model: give the checkpoint to load into the model")
        sd, meta = load_checkpoint_file(checkpoint)
        if meta.get("quant") and not qlayers(model):
            quantize(model, meta["quant"])
        elif meta.get("quant") and (have := getattr(model, "fames_quant_config", None)) and (
                diff := differences(have, meta["quant"])):
            said = ", ".join(f"{k}: {have} in the model, {want} in the checkpoint" for k, (have, want) in diff.items())
            raise FamesError(f"the model given is quantized otherwise than {checkpoint} ({said}): it would run at its "
                             "own widths; give the float model (load_model quantizes it as the checkpoint was)")
        load_state_dict_checked(model, sd, source=str(checkpoint))
        model.checkpoint_meta = meta
        m = model.eval()
    else:
        m = load_zoo_model(model, checkpoint, num_classes)
    meta = getattr(m, "checkpoint_meta", None) or {}
    saved_with = meta.get("assignment")
    if saved_with and assignment is None and not exact:  # a run's model: the assignment and library beside it
        here = Path(checkpoint).parent
        if (here / saved_with).is_file() and (library is not None or (here / "library").is_dir()):
            assignment, library = here / saved_with, library if library is not None else here / "library"
        else:
            warnings.warn(f"{checkpoint} was saved with the AppMuls of {saved_with}, not found beside it (with its "
                          "library/): it is loaded on exact multipliers; give assignment= and library= (in the CLI "
                          "--assignment and --library)", stacklevel=2)
    if assignment is not None:
        if library is None:
            raise FamesError("an assignment needs its library (library=, in the CLI --library): the AppMuls it names")
        if saved_with and Path(assignment).name != saved_with:
            warnings.warn(f"{checkpoint} was calibrated with the AppMuls of {saved_with}, not those of {assignment}: "
                          "the accuracy is of neither reported model (load the model_R*.pt saved with that "
                          "assignment)", stacklevel=2)
        substitute(m, load_assignment(assignment), library if isinstance(library, Library) else Library.load(library))
    elif exact:  # a model given already approximated: back to the exact multipliers, as asked
        for _, layer in qlayers(m):
            layer.clear_assignment()
    return m
