"""`p2m eval`: MPJPE / PA-MPJPE (the original's 14 joints and all 17), MPVPE, MRPE and mesh quality of a model on a
shard split.

Protocol (Pose2Mesh's ``evaluate``; digest section 4): the 17 H36M joints are regressed from the predicted mesh
(PoseNet's lifted joints for a ``stage: posenet`` model), both poses are aligned at the pelvis, and errors are
averaged over samples x joints: the 14 joints without Pelvis, Torso and Nose (``mpjpe``, ``pa_mpjpe``) and all 17
(``mpjpe_17``, ``pa_mpjpe_17``). PA = per-sample similarity Procrustes. ``mpvpe``: all vertices, each mesh minus
its own regressed pelvis, over samples that have a mesh target. ``lifted_mpjpe``: PoseNet's joints on the 14.
Ground truth: the shards' 3D joints (``j3d``), else the body model's regressed joints. Every sample of the split
is scored once (the last batch is not dropped), and the per-epoch validation of ``p2m train`` uses this code (not
the original's mean of per-batch means).

Beyond the original: ``mrpe`` (mm), the root position recovered in the camera frame by least squares from the
ground-truth 2D joints, the predicted root-relative joints and the known intrinsics, against the true root
(samples with a camera); ``edge_error`` (%), the mean relative edge-length error of the predicted mesh against the
ground-truth one; ``normal_dev`` (%), the share of faces whose normal deviates more than 60 degrees from the
ground truth's. The last two say whether a mesh is smooth and untorn, which MPVPE alone does not.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from p2m.errors import ConfigError
from p2m.joints import H36M_EVAL_14
from p2m.pose2mesh import metrics as M
from p2m.pose2mesh.config import Config, from_dict
from p2m.pose2mesh.data import BatchInputs, BatchPreparer, action_label
from p2m.pose2mesh.distributed import autocast_context
from p2m.pose2mesh.model import Pose2MeshOutput

logger = logging.getLogger(__name__)

#: Metric names in reporting order, with their table labels (mm unless :data:`PERCENT`).
METRICS: dict[str, str] = {
    "mpjpe": "MPJPE (14 joints)",
    "pa_mpjpe": "PA-MPJPE (14 joints)",
    "mpjpe_17": "MPJPE (17 joints)",
    "pa_mpjpe_17": "PA-MPJPE (17 joints)",
    "mpvpe": "MPVPE",
    "lifted_mpjpe": "PoseNet MPJPE (14 joints)",
    "mrpe": "MRPE (root, camera frame)",
    "edge_error": "edge-length error vs GT mesh",
    "normal_dev": "faces > 60 deg off GT normal",
}
#: Metrics in percent: mesh quality (relative edge-length error, share of faces whose normal deviates > 60 deg).
PERCENT = ("edge_error", "normal_dev")
#: Metrics that need a predicted mesh.
MESH_METRICS = ("mpvpe", "lifted_mpjpe", "edge_error", "normal_dev")


class MetricAccumulator:
    """Per-sample errors of a split; mergeable across ranks (its :meth:`state` is plain numpy/lists)."""

    def __init__(self, faces: Any = None) -> None:
        self.errors: dict[str, list[np.ndarray]] = {k: [] for k in METRICS}
        self.actions: list[str] = []
        self.faces = (
            None
            if faces is None
            else np.asarray(faces.detach().cpu().numpy() if hasattr(faces, "detach") else faces)
        )

    def add(self, out: Pose2MeshOutput, inp: BatchInputs) -> None:
        """Score one batch (rows without a GT pose are skipped; MPVPE is NaN where there is no GT mesh)."""
        rows = inp.joints_valid.cpu().numpy().astype(bool)
        if not rows.any():
            return
        gt = inp.joints.float().cpu().numpy()[rows]
        lifted = out.joints_lifted.float().cpu().numpy()[rows]
        pred = lifted if out.joints_from_mesh is None else out.joints_from_mesh.float().cpu().numpy()[rows]
        e = self.errors
        e["mpjpe"].append(M.mpjpe(pred, gt, H36M_EVAL_14, root=0, reduce=False))
        e["pa_mpjpe"].append(M.pa_mpjpe(pred, gt, H36M_EVAL_14, reduce=False))
        e["mpjpe_17"].append(M.mpjpe(pred, gt, root=0, reduce=False))
        e["pa_mpjpe_17"].append(M.pa_mpjpe(pred, gt, reduce=False))
        e["lifted_mpjpe"].append(M.mpjpe(lifted, gt, H36M_EVAL_14, root=0, reduce=False))
        n = int(rows.sum())
        vpe, edge, normal, mrpe = (np.full(n, np.nan) for _ in range(4))
        if out.mesh is not None and inp.mesh is not None:
            has_mesh = inp.mesh_valid.cpu().numpy().astype(bool)[rows]
            if has_mesh.any():
                sel = torch.from_numpy(np.flatnonzero(rows)[has_mesh]).to(out.mesh.device)
                pm, gm = out.mesh[sel].float(), inp.mesh[sel].float()
                vpe[has_mesh] = M.mpvpe(pm, gm, root_pred=out.joints_from_mesh[sel, 0].float(), reduce=False)
                if self.faces is not None:
                    edge[has_mesh] = 100.0 * M.edge_length_error(pm, gm, self.faces, reduce=False)
                    normal[has_mesh] = 100.0 * M.normal_deviation_share(pm, gm, self.faces, reduce=False)
        if inp.cam is not None and inp.cam_valid is not None and inp.j2d is not None and inp.root is not None:
            ok = inp.cam_valid.cpu().numpy().astype(bool)[rows]
            if ok.any():
                idx = np.flatnonzero(rows)[ok]
                j2d = inp.j2d.float().cpu().numpy()[idx]
                root = M.root_from_projection(
                    j2d,
                    pred[ok] - pred[ok][:, :1],
                    inp.cam.float().cpu().numpy()[idx],
                    weights=(j2d[..., 2] > 0).astype(np.float64),
                )
                mrpe[ok] = M.mrpe(root, inp.root.float().cpu().numpy()[idx], reduce=False)
        e["mpvpe"].append(vpe)
        e["edge_error"].append(edge)
        e["normal_dev"].append(normal)
        e["mrpe"].append(mrpe)
        self.actions += [action_label(k) for k, r in zip(inp.keys, rows, strict=True) if r]

    def state(self) -> dict[str, Any]:
        return {"errors": {k: _cat(v) for k, v in self.errors.items()}, "actions": list(self.actions)}

    @staticmethod
    def summarize(states: Sequence[Mapping[str, Any]], with_mesh: bool) -> dict[str, Any]:
        """Merge rank states into ``{"samples", "mesh_samples", <metric>: mm, "per_action": {...}}``."""
        errors = {k: _cat([s["errors"][k] for s in states]) for k in METRICS}
        actions = np.array([a for s in states for a in s["actions"]], dtype=object)
        if not with_mesh:
            for k in MESH_METRICS:
                errors.pop(k)
        out: dict[str, Any] = {"samples": int(len(actions))}
        if with_mesh:
            out["mesh_samples"] = int(np.isfinite(errors["mpvpe"]).sum())
        out.update(_means(errors, np.ones(len(actions), bool)))
        names = sorted(set(actions.tolist()), key=_natural)
        if len(names) > 1:
            out["per_action"] = {
                a: {"samples": int((actions == a).sum()), **_means(errors, actions == a)} for a in names
            }
        return out


def _cat(parts: Sequence[np.ndarray]) -> np.ndarray:
    parts = [np.asarray(p, dtype=np.float64) for p in parts if len(p)]
    return np.concatenate(parts) if parts else np.zeros(0)


def _means(errors: Mapping[str, np.ndarray], mask: np.ndarray) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for k, v in errors.items():
        sel = v[mask]
        sel = sel[np.isfinite(sel)]
        out[k] = float(sel.mean()) if len(sel) else None
    return out


def _natural(label: str) -> tuple[int, Any]:
    return (0, int(label)) if label.isdigit() else (1, label)


def evaluate_model(
    model: torch.nn.Module,
    batches: Iterable[Mapping[str, Any]],
    preparer: BatchPreparer,
    *,
    amp: str = "off",
    progress: bool | None = None,
    desc: str = "eval",
    total: int | None = None,
) -> MetricAccumulator:
    """Run ``model`` over ``batches`` under ``torch.inference_mode()`` and accumulate the errors of this rank."""
    from tqdm import tqdm

    acc = MetricAccumulator(faces=None if preparer.body is None else preparer.body.faces)
    was_training = model.training
    model.eval()
    bar = tqdm(
        total=total,
        desc=desc,
        unit=" samples",
        disable=(not progress) if progress is not None else None,
        leave=False,
        mininterval=0.5,
    )
    try:
        with torch.inference_mode():
            for batch in batches:
                inp = preparer(batch)
                with autocast_context(preparer.device, amp):
                    out = model(inp.pose2d)
                acc.add(_float_output(out), inp)
                bar.update(inp.size)
    finally:
        bar.close()
        model.train(was_training)
    return acc


def _float_output(out: Pose2MeshOutput) -> Pose2MeshOutput:
    return Pose2MeshOutput(*(None if t is None else t.float() for t in out))


def evaluate_checkpoint(
    checkpoint: str | Path,
    data: str | Path,
    *,
    split: str = "test",
    batch_size: int = 256,
    device: str = "auto",
    eval_input: str = "noisy",
    seed: int = 0,
    max_samples: int | None = None,
    out: str | Path | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Score a checkpoint on a shard split and write the result as JSON (the entry of ``p2m eval``).

    Args:
        checkpoint: a ``.pt`` checkpoint, a ``.safetensors`` weights file or a run folder (its best.pt, else
            last.pt, else best.safetensors).
        data: the shard folder (or its index.json).
        split: split to score.
        batch_size: samples per forward pass.
        device: ``auto``, ``cpu`` or ``cuda``.
        eval_input: "noisy" (GT 2D + the config's synthetic error model, seeded per sample) or "gt".
        seed: seed of the evaluation noise.
        max_samples: score only the first samples of the split.
        out: the JSON file (default: ``RUN/eval_{split}.json`` for a checkpoint inside a run, else beside it).
        progress: show a progress bar (None: on a terminal).

    Returns:
        ``{"checkpoint", "data", "split", "input", "samples", <metric>: mm, "per_action"?, "seconds", "json"}``.
    """
    from p2m.body import create
    from p2m.pose2mesh.checkpoint import load_model_state, resolve_checkpoint
    from p2m.pose2mesh.data import body_selection, iter_eval_batches, split_size
    from p2m.pose2mesh.distributed import resolve_device
    from p2m.pose2mesh.model import build_model
    from p2m.shards.index import require_split

    t0 = time.perf_counter()
    if eval_input not in ("noisy", "gt"):
        raise ConfigError(f"--input {eval_input!r}: expected 'noisy' or 'gt'")
    require_split(data, split)  # before the model loads
    dev = resolve_device(device)
    path = resolve_checkpoint(checkpoint)
    state, config, info = load_model_state(path)
    cfg = from_dict(Config, config)
    body = None
    if cfg.model.stage == "pose2mesh":
        body = create(cfg.model.body.model, topology=cfg.model.body.topology, rig=cfg.model.body.rig)
    model = build_model(cfg, body=body)
    _load_strict(model, state, path)
    model.to(dev)
    body = None if body is None else body.to(dev)
    body_kwargs, _ = body_selection(data, split, cfg, need_body=body is not None)
    prep = BatchPreparer(cfg, body, dev, train=False, eval_input=eval_input, eval_seed=seed)
    batches = iter_eval_batches(data, split, batch_size, body_kwargs=body_kwargs, max_samples=max_samples)
    acc = evaluate_model(
        model,
        batches,
        prep,
        amp=cfg.train.amp,
        progress=progress,
        desc=f"eval {split}",
        total=split_size(data, split, max_samples),
    )
    result: dict[str, Any] = {
        "checkpoint": str(path),
        "epoch": info.get("epoch"),
        "step": info.get("step"),
        "data": str(data),
        "split": split,
        "stage": cfg.model.stage,
        "input": "gt"
        if eval_input == "gt"
        else f"noisy ({cfg.transform.noise.kind} error model, seed {seed})",
        "unit": "mm",
        "percent": list(PERCENT),
    }
    result.update(MetricAccumulator.summarize([acc.state()], with_mesh=body is not None))
    result["seconds"] = round(time.perf_counter() - t0, 2)
    json_path = Path(out) if out is not None else default_eval_path(path, split)
    result["json"] = str(json_path)
    from p2m.io import write_json

    write_json(json_path, result, indent=1)
    return result


def _load_strict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], path: Path) -> None:
    from p2m.errors import CheckpointError

    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the model built from its config: {exc}") from exc


def default_eval_path(checkpoint: Path, split: str) -> Path:
    """``RUN/eval_{split}.json`` for ``RUN/checkpoints/*.pt`` or ``RUN/*.safetensors``, else beside the file."""
    p = Path(checkpoint)
    if p.parent.name == "checkpoints":
        return p.parent.parent / f"eval_{split}.json"
    if (p.parent / "config.yaml").exists():
        return p.parent / f"eval_{split}.json"
    return p.with_name(f"{p.stem}_eval_{split}.json")


def format_result(result: Mapping[str, Any]) -> str:
    """The summary table (and the per-action table) of :func:`evaluate_checkpoint`'s result."""
    head = (
        f"{result.get('checkpoint')} (epoch {result.get('epoch')}, step {result.get('step')}) on split "
        f"{result.get('split')!r}: {result.get('samples')} samples, input {result.get('input')}"
    )
    keys = [k for k in METRICS if result.get(k) is not None]
    width = max(len(METRICS[k]) for k in keys) if keys else 10
    lines = [head, f"{'metric'.ljust(width)}  value", f"{'-' * width}  --------"]
    lines += [f"{METRICS[k].ljust(width)}  {result[k]:6.1f} {'%' if k in PERCENT else 'mm'}" for k in keys]
    per = result.get("per_action")
    if per:
        cols = [k for k in ("mpjpe", "pa_mpjpe", "mpvpe") if k in keys]
        aw = max(6, *(len(a) for a in per))
        lines += ["", f"{'action'.ljust(aw)}  samples  " + "  ".join(f"{c:>8}" for c in cols)]
        for a, r in per.items():
            vals = "  ".join(f"{r[c]:8.1f}" if r.get(c) is not None else f"{'-':>8}" for c in cols)
            lines.append(f"{a.ljust(aw)}  {r['samples']:7d}  {vals}")
    return "\n".join(lines)
