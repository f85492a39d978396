"""Models in MLflow: the logged ``pt2`` export, loading it, and the Model Registry."""

from __future__ import annotations

import copy
from typing import Any

import mlflow
import numpy as np
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import Schema, TensorSpec

from ..models import Normalize

MODEL_NAME = "model"
CHAMPION_ALIAS = "champion"  # registry alias of a study's best model
# Serving needs only these; listing them skips MLflow's slow, network-hungry inference.
PIP_REQUIREMENTS = [f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}", "numpy"]


def log_model(result, register_as: str | None = None) -> None:
    """Log the trained model as a ``pt2`` export that takes [0, 1] float pixels (N, C, H, W).

    ``pt2`` (``torch.export``) is a traced graph: loading it runs no pickled code and
    needs no bench import. Normalisation is part of the logged graph, so a caller feeds
    raw pixels scaled to [0, 1].
    """
    # A contiguous CPU copy: the trainer may hold channels_last weights on a GPU, which
    # the pt2 archive stores less portably; the caller's model is left as it is.
    model = Normalize(result.mean, result.std, copy.deepcopy(result.model))
    model = model.to("cpu", memory_format=torch.contiguous_format).eval()
    example = result.input_example.numpy().astype(np.float32)
    n_classes = model(torch.from_numpy(example)).shape[1]
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *example.shape[1:]))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, n_classes))]),
    )
    info = mlflow.pytorch.log_model(
        model,
        name=MODEL_NAME,
        input_example=example,
        signature=signature,
        serialization_format="pt2",
        pip_requirements=PIP_REQUIREMENTS,
        metadata={"classes": list(result.classes), "input": "float32 pixels in [0, 1], NCHW"},
        registered_model_name=register_as,
    )
    if register_as and info.registered_model_version is not None:
        # The alias moves to the newest best: `models:/<name>@champion` always loads it.
        MlflowClient().set_registered_model_alias(register_as, CHAMPION_ALIAS, str(info.registered_model_version))


def load_model(run_id: str) -> torch.nn.Module:
    """The model logged by run ``run_id`` (a pt2 export: no pickled code is executed)."""
    return mlflow.pytorch.load_model(f"runs:/{run_id}/{MODEL_NAME}")


def model_uri(run_id: str) -> str:
    return f"runs:/{run_id}/{MODEL_NAME}"


def logged_models(run_id: str) -> list[str]:
    """Names of the models logged by ``run_id`` (MLflow 3 keeps them as LoggedModels, not run artifacts)."""
    client = MlflowClient()
    experiment_id = client.get_run(run_id).info.experiment_id
    models = client.search_logged_models([experiment_id], filter_string=f"source_run_id = '{run_id}'")
    return [m.name for m in models]


def registered_model(name: str, run_ids: set[str]) -> dict[str, Any] | None:
    """The version of registered model ``name`` that the alias ``champion`` points at, when one of
    ``run_ids`` logged it, else the newest version one of them logged, as {name, version, aliases,
    run_id}; None if the registry holds none (e.g. --no-register, or no winner good enough)."""
    mine = [v for v in _versions(name) if v.run_id in run_ids]
    if not mine:
        return None
    client = MlflowClient()
    # search_model_versions leaves aliases empty on some stores; the version itself has them
    with_aliases = [client.get_model_version(name, v.version) for v in mine]
    chosen = max(with_aliases, key=lambda v: (CHAMPION_ALIAS in (v.aliases or []), int(v.version)))
    return {"name": name, "version": chosen.version, "aliases": list(chosen.aliases or []), "run_id": chosen.run_id}


def registered_versions(name: str) -> list[str]:
    """Source run ids of the versions of registered model ``name``."""
    return [v.run_id for v in MlflowClient().search_model_versions(f"name = '{name}'")]


def register_champion(run_id: str, name: str) -> str:
    """Point the alias ``champion`` of registered model ``name`` at the model run ``run_id`` logged
    (``models:/<name>@champion`` then loads it): the version already registered from that run, if
    any, else a new version; the version. Confirming the same winner again adds no version."""
    existing = [v for v in _versions(name) if v.run_id == run_id]
    if existing:
        version = str(min(int(v.version) for v in existing))
    else:
        version = str(mlflow.register_model(model_uri(run_id), name).version)
    MlflowClient().set_registered_model_alias(name, CHAMPION_ALIAS, version)
    return version


def _versions(name: str) -> list:
    try:
        return list(MlflowClient().search_model_versions(f"name = '{name}'"))
    except MlflowException:  # no such model, on stores that say so rather than return none
        return []
