"""The eleven steps of `p2m demo`, each one call into a stage's public entry function on embedded defaults."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from p2m.demo.runner import DemoContext, Step
from p2m.errors import P2MError
from p2m.native import is_mediapipe_routine, native_stderr_filtered

logger = logging.getLogger(__name__)

#: Subjects of the shards: the crawled people (detect writes subject 1), synthetic training and test people.
WEB_SUBJECTS, TRAIN_SUBJECTS, TEST_SUBJECTS = (1,), (5, 6, 7, 8), (9, 10)
#: Body mesh of the demo model (the 1,229-vertex anny mesh of configs/tiny_pose2mesh.yaml).
TOPOLOGY = "notoes_collapse10pc"


def shipped_config() -> dict[str, Any] | None:
    """The config of the pretrained model shipped with p2m (``default``), or None when this installation has none."""
    from p2m.errors import CheckpointError
    from p2m.pose2mesh.checkpoint import load_weights
    from p2m.pose2mesh.pretrained import shipped_path

    try:
        return load_weights(shipped_path())[1]
    except CheckpointError as exc:
        logger.warning("no shipped model (%s): the demo trains a tiny model from scratch", exc)
        return None


def train_config(ctx: DemoContext) -> dict[str, Any]:
    """The demo's model and training settings (a plain dict): fine-tuning of the shipped model (``default``) on the
    demo's data, or without one configs/tiny_pose2mesh.yaml from scratch; sized by the mode."""
    s = ctx.sizes
    shipped = shipped_config()
    if shipped is not None:
        # the shipped model's networks and input normalisation; a short, gentle fine-tune on the demo's shards
        return {
            "model": shipped["model"],
            "transform": shipped["transform"],
            "loss": {**shipped["loss"], "edge_start_epoch": 0, "ramp_epochs": 0.0},
            "train": {
                "optimizer": "adam",
                "lr": 0.00005,
                "batch_size": 32,
                "epochs": s.epochs,
                "scheduler": "cosine",
                "seed": 123 + ctx.seed,
                "num_workers": 0,
                "shuffle_buffer": 512,
                "log_every": 10,
                "ckpt_every_steps": 0,
                "val_batch_size": 160,
                "val_max_samples": s.val_samples,
                "train_split": "train",
                "val_split": "test",
                "val_input": "gt",
                "best_metric": "pa_mpjpe",
            },
        }
    return {
        "model": {
            "stage": "pose2mesh",
            "joint_set": "h36m",
            "body": {"model": "anny", "topology": TOPOLOGY, "rig": "cmu_mb"},
            "posenet": {"hidden": 256, "num_blocks": 1, "dropout": 0.0, "activation": "relu"},
            "meshnet": {
                "joint_channels": [16, 16],
                "level_channels": [[32, 32]] * 4,
                "head_channels": [16],
                "cheb_k": 3,
                "activation": "relu",
                "norm": "batch",
                "residual": "interpolate",
                "laplacian_scaling": "chebnet",
                "detach_lifted": True,
            },
        },
        "loss": {
            "vertex": 1.0,
            "normal": 0.1,
            "edge": 20.0,
            "joint": 0.001,
            "lift": 0.001,
            "form": "l1",
            "edge_start_epoch": 1,
        },
        "transform": {"crop_width": 288, "crop_height": 384, "flip_prob": 0.0, "noise": {"kind": "gaussian"}},
        "train": {
            "optimizer": "adam",
            "lr": 0.001,
            "batch_size": 32,
            "epochs": s.epochs,
            "lr_steps": [max(1, s.epochs - 1)],
            "lr_factor": 0.1,
            "seed": 123 + ctx.seed,
            "num_workers": 0,
            "shuffle_buffer": 512,
            "log_every": 10,
            "ckpt_every_steps": 0,
            "val_batch_size": 160,
            "val_max_samples": s.val_samples,
            "train_split": "train",
            "val_split": "test",
        },
    }


def quiet_native_stderr():
    """Drop MediaPipe's routine native log lines from file descriptor 2; anything else is written back."""
    return native_stderr_filtered(is_mediapipe_routine, logger)


def _count(stats: dict[str, Any], prefix: str) -> int:
    return sum(int(v) for k, v in stats.items() if k.startswith(prefix) and isinstance(v, (int, float)))


# ------------------------------------------------------------------------------------------------ 1. people
def make_people(ctx: DemoContext) -> str:
    from p2m.annotate.synth import SynthOptions, synth

    s = ctx.sizes
    folder = ctx.work / "people"
    options = SynthOptions(
        num=s.people,
        poses="cmu-eval",
        cameras="random",
        images=True,
        seed=ctx.seed + 7,
        image_size=s.image_size,
        name="people",
    )
    synth(folder, options, progress=False)
    images = sorted((folder / "images").rglob("*.jpg"))
    if len(images) != s.people:
        raise P2MError(f"{folder}/images: {len(images)} pictures, expected {s.people}")
    ctx.facts["people"] = images
    ctx.metric("people", "pictures rendered", len(images))
    return f"rendered {len(images)} people ({s.image_size} px, CMU mocap poses, random cameras) -> {folder}"


# ------------------------------------------------------------------------------------------------ 2. site
def serve_site(ctx: DemoContext) -> str:
    from p2m.demo.site import build_site

    site = build_site(ctx.facts["people"])
    ctx.site = site.start()
    pages = sum(r.content_type == "text/html" for files in site.files.values() for r in files.values())
    pictures = sum(
        r.content_type.startswith("image/") for files in site.files.values() for r in files.values()
    )
    ctx.metric("site", "hosts", len(site.bases))
    ctx.metric("site", "pages", pages)
    ctx.metric("site", "image files", pictures)
    hosts = ", ".join(f"{label} {base}" for label, base in site.bases.items())
    return f"serving {pages} pages and {pictures} image files on {len(site.bases)} hosts: {hosts}"


# ------------------------------------------------------------------------------------------------ 3. crawl
def crawl_site(ctx: DemoContext) -> str:
    from p2m.crawler import crawl

    site = ctx.site
    out = ctx.work / "crawl"
    result = crawl(
        [site.url("www", "/")],
        out,
        allow_private=True,
        depth=3,
        delay=0.0,
        per_host=2,
        concurrency=8,
        retries=1,
        follow_robots_sitemaps=True,
        progress=False,
        manifest_every_s=0,
        connect_timeout=5.0,
        read_timeout=10.0,
        total_timeout=30.0,
    )
    stats = result.stats.get("counters", {})
    ctx.facts["crawl"] = out
    refused = int(stats.get("robots/forbidden", 0))
    rejected = _count(stats, "image/rejected/")
    duplicates = int(stats.get("image/duplicate", 0))
    noai = int(stats.get("x_robots/skipped", 0))
    pages = int(stats.get("page/parsed", 0))
    bad = site.disallowed_requests()
    for name, value in (
        ("pages read", pages),
        ("images stored", result.images_stored),
        ("URLs refused by robots.txt", refused),
        ("requests to disallowed paths", len(bad)),
        ("images rejected (too small...)", rejected),
        ("duplicate images", duplicates),
        ("images skipped by X-Robots-Tag", noai),
    ):
        ctx.metric("crawl", name, value)
    if bad:
        raise P2MError(f"the crawler fetched {len(bad)} URL(s) that robots.txt disallows: {bad[:3]}")
    if result.images_stored == 0:
        raise P2MError(
            f"the crawl of {site.url('www', '/')} stored no image (finish reason "
            f"{result.finish_reason}; see {out / 'stats.json'})"
        )
    return (
        f"{pages} pages, {result.images_stored} images stored; {refused} URLs refused by robots.txt, "
        f"{rejected} rejected, {duplicates} duplicate, {noai} X-Robots-Tag skipped -> {out}"
    )


# ------------------------------------------------------------------------------------------------ 4. detect
def detect_people(ctx: DemoContext) -> str:
    from p2m.annotate.detect import detect
    from p2m.demo.report import skeleton_figure

    out = ctx.work / "web"
    with quiet_native_stderr():
        stats = detect(ctx.facts["crawl"], out, name="web", progress=False)
    with_people, total = int(stats.get("images/person", 0)), int(stats.get("images/total", 0))
    people = int(stats.get("people", 0))  # a group photo holds several
    ctx.facts["web"] = out
    ctx.metric("detect", "images read", total)
    ctx.metric("detect", "people detected", people)
    ctx.metric("detect", "visible keypoints", int(stats.get("keypoints/visible", 0)))
    if people == 0:
        raise P2MError(
            f"MediaPipe found no person in the {total} crawled images ({out / 'detect_stats.json'})"
        )
    fig = skeleton_figure(out, ctx.figures / "detect.png")
    if fig is not None:
        ctx.picture(
            fig,
            "Crawled pictures with detected keypoints",
            "MediaPipe Pose keypoints (COCO-17), as `p2m annotate detect` wrote them.",
        )
    return f"{people} people in {with_people} of {total} crawled images -> {out}"


# ------------------------------------------------------------------------------------------------ 5. fit
def fit_crawled_people(ctx: DemoContext) -> str:
    from p2m.annotate import fit_bodies
    from p2m.annotate.fit_solver import SolverOptions
    from p2m.demo.report import mesh_figure

    s = ctx.sizes
    options = replace(SolverOptions(), headings=s.fit_headings, starts=s.fit_starts)
    stats = fit_bodies(
        ctx.facts["web"], device=ctx.device, iters=s.fit_iters, options=options, progress=False
    )
    fitted, valid = int(stats.get("annotations/fitted", 0)), int(stats.get("annotations/valid", 0))
    error = stats.get("fit_error_px/mean")
    ctx.metric("fit", "people fitted", fitted)
    ctx.metric("fit", "valid fits", valid)
    if error is not None:
        ctx.metric("fit", "mean reprojection error", float(error), "px")
    ctx.facts["fit_valid"] = valid
    fig = mesh_figure(ctx.facts["web"], ctx.figures / "fit.png")
    if fig is not None:
        ctx.picture(
            fig,
            "Fitted body meshes",
            "anny fitted to the detected keypoints by `p2m annotate fit`, drawn over the photo.",
        )
    err = f", mean reprojection error {error:.1f} px" if error is not None else ""
    return f"{fitted} people fitted, {valid} valid{err} ({stats.get('device')}, {s.fit_iters} iterations)"


# ------------------------------------------------------------------------------------------------ 6. validate
def validate_web(ctx: DemoContext) -> str:
    from p2m.annotate.validate import validate

    report = validate(ctx.facts["web"])
    c = report.counts
    ctx.metric("validate", "annotations checked", int(c["annotations"]))
    ctx.metric("validate", "3D frames checked", int(c["joint_3d_frames"]))
    ctx.metric("validate", "problems", len(report.problems))
    if not report.ok:
        listed = "; ".join(str(p) for p in report.problems[:5])
        raise P2MError(f"{ctx.facts['web']}: {len(report.problems)} problem(s): {listed}")
    return report.summary()


# ------------------------------------------------------------------------------------------------ 7. synth
def synth_training_data(ctx: DemoContext) -> str:
    from p2m.annotate.synth import SynthOptions, synth

    s = ctx.sizes
    train_dir, eval_dir = ctx.work / "synth-train", ctx.work / "synth-eval"
    train = synth(
        train_dir,
        SynthOptions(
            num=s.train_samples,
            poses="cmu-train",
            cameras="h36m",
            seed=ctx.seed + 1,
            subjects=len(TRAIN_SUBJECTS),
            first_subject=TRAIN_SUBJECTS[0],
            topology=TOPOLOGY,
            name="synth",
        ),
        progress=False,
    )
    test = synth(
        eval_dir,
        SynthOptions(
            num=s.eval_samples,
            poses="cmu-eval",
            cameras="h36m",
            seed=ctx.seed + 2,
            subjects=len(TEST_SUBJECTS),
            first_subject=TEST_SUBJECTS[0],
            topology=TOPOLOGY,
            name="synth_eval",
        ),
        progress=False,
    )
    ctx.facts["synth"] = [train_dir, eval_dir]
    ctx.metric("synth", "training samples", train["images"])
    ctx.metric("synth", "evaluation samples", test["images"])
    subj = ",".join(f"S{i}" for i in TRAIN_SUBJECTS), ",".join(f"S{i}" for i in TEST_SUBJECTS)
    return (
        f"{train['images']} training samples ({subj[0]}, CMU train clips) and {test['images']} evaluation "
        f"samples ({subj[1]}, held-out CMU clips), pose-only, 4 cameras each"
    )


# ------------------------------------------------------------------------------------------------ 8. shard
def shard_all(ctx: DemoContext) -> str:
    from p2m.shards import build_shards

    out = ctx.work / "shards"
    parts = [("train", TRAIN_SUBJECTS), ("test", TEST_SUBJECTS)]
    datasets = list(ctx.facts["synth"])
    if "web" in ctx.facts:  # the crawled people, in a split of their own (the model trains on synthetic data)
        parts.append(("web", WEB_SUBJECTS))
        datasets.insert(0, ctx.facts["web"])
    splits = {name: ",".join(f"S{i}" for i in subjects) for name, subjects in parts}
    stats = build_shards(datasets, out, splits=splits, progress=False)
    ctx.facts["shards"] = out
    counts = {name: int(stats.get(f"split/{name}/samples", 0)) for name in splits}
    ctx.facts["split_samples"] = counts
    for name, n in counts.items():
        ctx.metric("shard", f"{name} samples", n)
    ctx.metric("shard", "shard files", int(stats.get("shards/written", 0)) + int(stats.get("shards/kept", 0)))
    ctx.metric("shard", "size", round(int(stats.get("bytes/written", 0)) / 1e6, 2), "MB")
    if counts["train"] == 0 or counts["test"] == 0:
        raise P2MError(f"{out}: split sizes {counts}: the train and test splits need samples")
    shards = sum(int(stats.get(f"split/{name}/shards", 0)) for name in splits)
    text = ", ".join(f"{name} {n}" for name, n in counts.items())
    return f"{sum(counts.values())} samples in {shards} shards ({text}) -> {out}"


# ------------------------------------------------------------------------------------------------ 9. train
def train_model(ctx: DemoContext) -> str:
    from p2m.pose2mesh.config import Config, from_dict
    from p2m.pose2mesh.plot import plot_run
    from p2m.pose2mesh.train import train

    raw = train_config(ctx)
    cfg = from_dict(Config, raw)
    run = ctx.work / "run"
    init = (
        "default" if raw["train"].get("best_metric") == "pa_mpjpe" else None
    )  # the shipped model's fine-tune
    result = train(cfg, run, ctx.facts["shards"], device=ctx.device, progress=None, init=init)
    ctx.facts["run"] = run
    ctx.metric("train", "optimizer steps", int(result["step"]))
    ctx.metric("train", "epochs", int(result["epoch"]) + 1)
    ctx.metric("train", "training time", float(result["seconds"]), "s")
    best = result.get("best") or {}
    try:
        plots = plot_run(run, ctx.figures / "training")
    except P2MError as exc:
        logger.warning("no training curves: %s", exc)
        plots = []
    for path in plots:
        ctx.picture(path, f"Training curves: {path.stem}", f"`p2m plot {run}`")
    best_text = f", best {best['metric']} {best['value']:.1f} mm" if best.get("value") is not None else ""
    start = "fine-tuned the shipped model: " if init else ""
    return (
        f"{start}{result['step']} steps over {int(result['epoch']) + 1} epoch(s) of "
        f"{ctx.facts['split_samples']['train']} samples{best_text} -> {run}"
    )


# ------------------------------------------------------------------------------------------------ 10. evaluate
def evaluate_model(ctx: DemoContext) -> str:
    from p2m.pose2mesh.evaluate import METRICS, evaluate_checkpoint

    run, shards = ctx.facts["run"], ctx.facts["shards"]
    result = evaluate_checkpoint(run, shards, split="test", device=ctx.device, progress=False)
    ctx.facts["eval"] = result
    ctx.metric("evaluate", "test samples", int(result.get("samples", 0)))
    for key in ("mpjpe", "pa_mpjpe", "mpvpe"):
        ctx.metric("evaluate", METRICS[key], result.get(key), "mm")
    for key in ("edge_error", "normal_dev"):  # is the mesh smooth and untorn?
        ctx.metric("evaluate", METRICS[key], result.get(key), "%")
    text = ", ".join(
        f"{METRICS[k].split(' (')[0]} {_mm(result.get(k))}" for k in ("mpjpe", "pa_mpjpe", "mpvpe")
    )
    text += f" on {result.get('samples')} held-out samples"
    if ctx.facts.get("fit_valid") and ctx.facts["split_samples"].get("web"):
        web = evaluate_checkpoint(
            run,
            shards,
            split="web",
            device=ctx.device,
            eval_input="gt",
            progress=False,
            out=run / "eval_web.json",
        )
        if web.get("mpjpe") is not None:
            ctx.metric("evaluate", "MPJPE vs. fitted crawled people", web["mpjpe"], "mm")
            text += f"; {web['mpjpe']:.1f} mm against the fits of {web.get('samples')} crawled people"
    return text


def _mm(value: Any) -> str:
    return "missing" if value is None else f"{float(value):.1f} mm"


# ------------------------------------------------------------------------------------------------ 11. infer
def infer_mesh(ctx: DemoContext) -> str:
    from p2m.infer import infer
    from p2m.layout import subject_file

    data_json = subject_file(ctx.facts["web"], "web", WEB_SUBJECTS[0], "data")
    out = ctx.work / "infer"
    result = infer(ctx.facts["run"], data_json, out, person=0, device=ctx.device)
    pr = result.prediction
    mesh = result.files.get("obj") or result.files.get("ply")
    if pr.vertices is None or mesh is None:
        raise P2MError(f"{ctx.facts['run']}: the model made no mesh (stage {result.input.joint_set})")
    ctx.facts["mesh"] = mesh
    ctx.metric("infer", "mesh vertices", int(len(pr.vertices)))
    ctx.metric("infer", "known input joints", int(pr.known.sum()))
    ctx.metric("infer", "camera fit error", float(pr.camera.rms_px), "px RMS")
    if "png" in result.files:
        ctx.picture(
            result.files["png"],
            "A crawled picture turned into a mesh",
            f"`p2m infer {ctx.facts['run']} --pose2d {data_json} --person 0`: the input keypoints, "
            "the predicted mesh through a weak-perspective camera, and a side view.",
        )
    files = ", ".join(p.name for p in result.files.values())
    return (
        f"{result.input.source}: {len(pr.vertices)}-vertex mesh, camera fit {pr.camera.rms_px:.1f} px RMS "
        f"-> {out} ({files})"
    )


STEPS: tuple[Step, ...] = (
    Step("people", "Render pictures of people (p2m synth --images)", make_people),
    Step(
        "site", "Serve them as a local website (3 hosts, robots.txt, sitemap)", serve_site, needs=("people",)
    ),
    Step("crawl", "Crawl the website (p2m crawl)", crawl_site, needs=("site",)),
    Step(
        "detect",
        "Detect 2D keypoints (p2m annotate detect)",
        detect_people,
        requires=("mediapipe",),
        needs=("crawl",),
        hint="pip install 'p2m[detect]'",
    ),
    Step(
        "fit",
        "Fit the body model in 3D (p2m annotate fit)",
        fit_crawled_people,
        requires=("p2m.annotate.fit",),
        needs=("detect",),
    ),
    Step("validate", "Validate the dataset (p2m annotate validate)", validate_web, needs=("detect",)),
    Step("synth", "Synthesise training and evaluation data (p2m synth)", synth_training_data),
    Step("shard", "Write WebDataset shards (p2m shard)", shard_all, needs=("synth",)),
    Step(
        "train",
        "Train a small Pose2Mesh (p2m train)",
        train_model,
        requires=("p2m.pose2mesh.train",),
        needs=("shard",),
    ),
    Step(
        "evaluate",
        "Evaluate it (p2m eval)",
        evaluate_model,
        requires=("p2m.pose2mesh.evaluate",),
        needs=("train",),
    ),
    Step(
        "infer",
        "Turn a crawled picture into a mesh (p2m infer)",
        infer_mesh,
        requires=("p2m.infer",),
        needs=("train", "detect"),
    ),
)
