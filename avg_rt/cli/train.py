"""`avg-rt train`: options -> one TrainConfig -> `avg_rt.train.loop.train`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from avg_rt.cli.options import DeviceOpt, ProgressOpt, SeedOpt
from avg_rt.config import (
    INFERENCE_ONLY,
    ConfigError,
    ModelConfig,
    TrainConfig,
    network_changes,
    resolve_config,
    to_dict,
    with_form,
    with_inference_options,
    with_network_options,
)
from avg_rt.files import check_outside

Opt = typer.Option


# What defines the run; a resume that changed them would continue another experiment.
FIXED_ON_RESUME = ("adversarial", "d_optimizer", "seed", "crop")


def resume_config(
    saved: TrainConfig,
    model: ModelConfig | None,
    device: str,
    overrides: dict[str, Any],
    option: str = "--resume",
) -> tuple[TrainConfig, list[str]]:
    """The saved config of a run with the options given on its resume applied, and a note
    for each value that changed. Refuses (ConfigError) a change of the network (`model`, from
    --preset/--form) or, on a resume, of FIXED_ON_RESUME; the inference-only options may
    change. `option` "--init-from": the config a new run starts from (any field may change
    but the network)."""
    model = model or saved.model
    if changes := network_changes(saved.model, model, widen=option == "--init-from"):
        differ = [f"{name} {a} -> {b}" for name, a, b in changes]
        raise ConfigError(
            f"the run's network cannot change on {option} ({', '.join(differ)}); start a new run"
        )
    given = {k: v for k, v in overrides.items() if v is not None and getattr(saved, k) != v}
    for name in FIXED_ON_RESUME if option == "--resume" else ():
        if name in given:
            raise ConfigError(
                f"--{name.replace('_', '-')}: cannot change on --resume (the run was trained "
                f"with {getattr(saved, name)}); start a new run"
            )
    cfg = dataclasses.replace(saved, model=model, device=device, **given)
    cfg.validate()
    notes = [f"{k} {getattr(saved, k)} -> {v}" for k, v in given.items()]
    notes += [
        f"{k} {_inference_option(saved.model, k)} -> {_inference_option(model, k)}"
        for k in INFERENCE_ONLY
        if getattr(model, k) != getattr(saved.model, k)
    ]
    if "steps" in given and cfg.lr_decay > 0:
        notes.append(f"learning rates now decaying over the last {cfg.lr_decay:g} of {cfg.steps}")
    return cfg, notes


def _check_palette_auto(cfg: TrainConfig, data: Any, radius: float | None) -> None:
    """Refuse --palette auto, before any data is read, where it cannot be made."""
    from avg_rt.data.frames import FrameFormat
    from avg_rt.training import stream_of

    if radius is not None and not radius >= 0:
        raise ConfigError(f"--palette-radius must be >= 0 levels, got {radius:g}")

    if cfg.model.deadzone:
        raise ConfigError(
            f"--palette auto: the model has deadzone {cfg.model.deadzone:g}; at most one of "
            "the two (add --deadzone 0)"
        )
    if stream_of(data, FrameFormat.of(cfg.model)) is not None:
        raise ConfigError(
            "--palette auto reads the colours of recorded frames; a live stream has none "
            "before training starts"
        )


def _with_palette(cfg: TrainConfig, train: Any, radius: float | None, say: bool) -> TrainConfig:
    """`cfg` with the palette of the recorded videos `train` (all their colours), and
    `radius` where given."""
    from avg_rt.config import MAX_PALETTE
    from avg_rt.data.frames import FrameFormat, palette_of

    colours = palette_of(
        ((v.name, v.frames) for v in train), FrameFormat.of(cfg.model), MAX_PALETTE
    )
    if say:
        was = _inference_option(cfg.model, "palette")
        typer.echo(f"palette: {len(colours)} colours of the training frames (was {was})")
    return with_inference_options(cfg, palette=colours, palette_radius=radius)


def _inference_option(model: ModelConfig, name: str) -> str:
    value = getattr(model, name)
    return (f"{len(value)} colours" if value else "none") if name == "palette" else f"{value:g}"


def _value_range(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--value-range must be LO,HI (e.g. -1,2), got {text!r}") from None
    return lo, hi


def train(
    data: Annotated[
        str,
        Opt(
            help="Data folder: Train/ and Test/ inside (TF layout), any folder of videos / "
            "frame folders, or a live stream, nothing written: atari:GAME[:frame-skip=4:"
            "policy=sticky:max-frames=500:seed=0:episodes=N] plays the emulator (episodes: "
            "replay episodes 0..N-1 in a cycle), raw:PATH:HxWxC[:dtype="
            "float32:range=LO,HI:episode=N:marked=1] reads raw frames (PATH - is stdin)."
        ),
    ],
    out: Annotated[Path, Opt("--out", "-o", help="Run folder (new, or existing with --resume).")],
    preset: Annotated[
        str | None, Opt(help="paper (the published network) or small (CPU). [default: small]")
    ] = None,
    steps: Annotated[int | None, Opt(help="Total iterations (default: preset's).")] = None,
    adversarial: Annotated[
        bool | None, Opt("--adversarial/--no-adversarial", help="Train with D (default) or G only.")
    ] = None,
    batch: Annotated[int | None, Opt(help="Clips per step (default: 8).")] = None,
    lr_g: Annotated[float | None, Opt(help="Generator learning rate (Adam).")] = None,
    lr_d: Annotated[float | None, Opt(help="Discriminator learning rate.")] = None,
    d_optimizer: Annotated[str | None, Opt(help="Discriminator optimizer: sgd or adam.")] = None,
    d_label_smoothing: Annotated[
        float | None, Opt(help="D's real label is 1 minus this (one-sided smoothing).")
    ] = None,
    adv_start: Annotated[
        int | None, Opt(help="G-only iterations before D and the adversarial term start.")
    ] = None,
    lr_decay: Annotated[
        float | None,
        Opt(help="Last fraction of the steps over which both learning rates fall to 0."),
    ] = None,
    clip_grad: Annotated[
        float | None,
        Opt(help="Clip each network's gradient to this L2 norm before its update (0: off)."),
    ] = None,
    form: Annotated[
        str | None,
        Opt(
            help="What G's scales predict: plain (the paper), residual (a refinement of the "
            "coarser scale, the authors' code), delta (a change to the last frame), select "
            "(a change to a per-pixel blend of the history frames) or select-hard (a change to "
            "a per-pixel pick of one history frame, trained straight-through)."
        ),
    ] = None,
    g_leak: Annotated[
        float | None,
        Opt(
            help="Slope of G's hidden activations below 0 (LeakyReLU; default 0: the paper's "
            "ReLU). Keeps a gradient through units that are negative on every input, which "
            "with ReLU are dead and can leave a delta generator copying the last frame."
        ),
    ] = None,
    select_window: Annotated[
        int | None,
        Opt(
            help="With --form select or select-hard: each pixel's blend takes from this odd "
            "K x K neighbourhood of every history frame (default 1: the pixel itself), so a "
            "sprite that moved up to K // 2 pixels is picked, not drawn."
        ),
    ] = None,
    d_spectral_norm: Annotated[
        bool | None,
        Opt(help="Spectral normalisation of every weight of D (not in the paper; default: off)."),
    ] = None,
    noise_channels: Annotated[
        int | None,
        Opt(
            help="A stochastic generator: N maps of noise into every scale, new at each "
            "prediction (not in the paper; default 0: off). --init-from a checkpoint with "
            "fewer widens it (zero weights: it predicts as before)."
        ),
    ] = None,
    best_of: Annotated[
        int | None,
        Opt(
            help="With --noise-channels, each G step draws K noise sequences per clip and "
            "trains on the one with the least Lp error (default 1)."
        ),
    ] = None,
    adv_fresh_draw: Annotated[
        bool | None,
        Opt(
            help="With --best-of, D also judges one fresh noise draw per clip in the G step "
            "(adversarial term only), so that every draw learns to look real (default off).",
        ),
    ] = None,
    unroll: Annotated[
        int | None, Opt(help="Recursive steps G is trained on (multi-step training).")
    ] = None,
    unroll_ramp: Annotated[
        int | None, Opt(help="Iterations over which the unrolled length grows from 1.")
    ] = None,
    free_run: Annotated[
        int | None,
        Opt(
            help="Before each G step, G runs 0..N steps (uniform) on its own predictions "
            "without gradients, and trains from there (not in the paper; default 0: off)."
        ),
    ] = None,
    d_free_run: Annotated[
        bool | None,
        Opt(
            help="With --free-run, D's step starts from a free run too, so D judges G's frames "
            "made from its own drifted history (not in the paper; default: off)."
        ),
    ] = None,
    crop: Annotated[int | None, Opt(help="Side of G's training crops (D: 32x32 windows).")] = None,
    feedback_8bit: Annotated[
        bool | None,
        Opt(
            "--feedback-8bit/--float-feedback",
            help="Unrolled steps see G's predictions as 8-bit frames, as rollouts do.",
        ),
    ] = None,
    movement_on: Annotated[
        str | None,
        Opt(
            help="Frames the movement filter measures: clip (all, target included: the TF "
            "project's) or history (the input frames only, so a still history is not kept "
            "mostly where its target moves)."
        ),
    ] = None,
    unfiltered_prob: Annotated[
        float | None, Opt(help="Fraction of clips that skip the movement filter (0.05).")
    ] = None,
    lam_adv: Annotated[float | None, Opt(help="Weight of the adversarial term.")] = None,
    lam_lp: Annotated[float | None, Opt(help="Weight of the Lp term.")] = None,
    lam_gdl: Annotated[float | None, Opt(help="Weight of the gradient difference term.")] = None,
    still_weight: Annotated[
        float | None,
        Opt(help="Weight of the Lp term on pixels the target keeps from the frame before (1)."),
    ] = None,
    adv_share_cap: Annotated[
        float | None,
        Opt(
            help="Cap on the adversarial term's share of the gradient of G's last layer; "
            "lam_adv is lowered on the steps that exceed it (0: off)."
        ),
    ] = None,
    deadzone: Annotated[
        float | None,
        Opt(
            help="Delta form, at inference: a pixel whose predicted change is below this "
            "many 8-bit levels (1/255 of the range) in every channel keeps the last frame "
            "(0: off)."
        ),
    ] = None,
    palette: Annotated[
        str | None,
        Opt(
            help="At inference, every predicted pixel becomes the nearest colour of the "
            "training frames (8-bit palette video: games, cartoons; at most 256 colours): "
            "auto; none: off. Not with --deadzone."
        ),
    ] = None,
    palette_radius: Annotated[
        float | None,
        Opt(
            help="With --palette: only pixels within this many 8-bit levels (Euclidean over "
            "the channels) of their nearest colour snap to it (0: every pixel)."
        ),
    ] = None,
    l_num: Annotated[
        int | None, Opt(help="p of the Lp term: 2 (the TF project), 1 (sparser changes).")
    ] = None,
    alpha: Annotated[
        float | None, Opt(help="Exponent of the gradient difference term (TF project: 2).")
    ] = None,
    test: Annotated[
        Path | None, Opt(help="Held-out videos (default: DATA/Test if present).")
    ] = None,
    test_recursions: Annotated[
        int | None, Opt(help="Recursive steps in periodic tests (default: the preset's).")
    ] = None,
    save_interval: Annotated[
        int | None, Opt(help="Steps between checkpoints (default: the preset's).")
    ] = None,
    test_interval: Annotated[
        int | None, Opt(help="Steps between test rollouts (default: the preset's).")
    ] = None,
    amp: Annotated[str | None, Opt(help="none, bf16 or fp16 autocast (CUDA only).")] = None,
    channels: Annotated[
        int | None, Opt(help="Channels per frame (default 3, RGB; 1: grayscale).")
    ] = None,
    value_range: Annotated[
        str | None,
        Opt(help="LO,HI: frames are float data in this range (default: 8-bit frames)."),
    ] = None,
    store_mib: Annotated[
        float, Opt(help="Live streams: memory for recent segments, oldest out first.")
    ] = 1024.0,
    store_frames: Annotated[
        int | None, Opt(help="Live streams: at most this many frames in the store.")
    ] = None,
    holdout: Annotated[
        float | None,
        Opt(help="Live streams: fraction of segments held out for tests (atari: 0.1, else 0)."),
    ] = None,
    live_fps: Annotated[
        float | None,
        Opt(help="Live streams: at most this many frames per second (pace an emulator)."),
    ] = None,
    segment_frames: Annotated[
        int, Opt(help="Live streams: episodes are cut into segments of at most this many.")
    ] = 1000,
    stall_timeout: Annotated[
        float, Opt(help="Live streams: seconds without a frame before training stops.")
    ] = 60.0,
    start_frames: Annotated[
        int,
        Opt(
            help="Live streams: training starts once the store holds this many frames (or "
            "is full, or the stream has ended).",
            min=0,
        ),
    ] = 0,
    seed: SeedOpt = None,
    device: DeviceOpt = "auto",
    resume: Annotated[bool, Opt(help="Continue the run in OUT from its checkpoint.")] = False,
    init_from: Annotated[
        Path | None,
        Opt(
            help="Start a new run from this checkpoint's networks (G, and D where it has "
            "one) and config, with fresh optimizers at step 0: fine-tuning. Options given "
            "change its config, all but the network."
        ),
    ] = None,
    mmap_cache: Annotated[
        bool,
        Opt(
            help="Decode videos once into memory-mapped files under "
            "DATA/.avg-rt-cache (for data larger than RAM)."
        ),
    ] = False,
    dry_run: Annotated[bool, Opt(help="Print the resolved config as JSON and exit.")] = False,
    progress: ProgressOpt = True,
) -> None:
    """Train the multi-scale GAN on clips sampled on the fly from videos.

    Example: avg-rt train --data data/mspacman --out runs/small --preset small --steps 2000

    Live: avg-rt train --data atari:ms_pacman --out runs/live, or
    ffmpeg -i cam.mp4 -f rawvideo -pix_fmt rgb24 - | avg-rt train --data raw:-:210x160x3 ...
    """
    from avg_rt.runners import resolve_device
    from avg_rt.training import check_format, frame_options

    overrides = dict(
        steps=steps,
        adversarial=adversarial,
        batch=batch,
        lr_g=lr_g,
        lr_d=lr_d,
        d_optimizer=d_optimizer,
        d_label_smoothing=d_label_smoothing,
        adv_start=adv_start,
        lr_decay=lr_decay,
        clip_grad=clip_grad,
        best_of=best_of,
        adv_fresh_draw=adv_fresh_draw,
        unroll=unroll,
        unroll_ramp=unroll_ramp,
        free_run=free_run,
        d_free_run=d_free_run,
        crop=crop,
        feedback_8bit=feedback_8bit,
        movement_on=movement_on,
        unfiltered_prob=unfiltered_prob,
        lam_adv=lam_adv,
        lam_lp=lam_lp,
        lam_gdl=lam_gdl,
        l_num=l_num,
        still_weight=still_weight,
        adv_share_cap=adv_share_cap,
        alpha=alpha,
        test_recursions=test_recursions,
        save_interval=save_interval,
        test_interval=test_interval,
        amp=amp,
        seed=seed,
    )
    chans, vrange, declared = frame_options(data, channels, _value_range(value_range))
    cfg = resolve_config(
        preset or "small",
        form,
        chans,
        vrange,
        g_leak,
        select_window,
        d_spectral_norm,
        noise_channels,
        validate=not resume and init_from is None,  # then once the checkpoint's is merged in
        device=device,
        **overrides,
    )
    if palette not in (None, "auto", "none"):
        raise ConfigError(f"--palette must be auto or none, got {palette!r}")
    # Inference-only options given now; --palette auto is read off the data once it is open.
    given = {"deadzone": deadzone, "palette": () if palette == "none" else None}
    if palette != "auto":  # else set with the palette it needs
        given["palette_radius"] = 0.0 if palette == "none" else palette_radius
    cfg = with_inference_options(cfg, **given)
    from avg_rt.train.loop import CHECKPOINT, check_resumable, check_run_folder, check_start

    check_start(resume, init_from)
    check_run_folder(out, resume)  # before reading any data
    local = [Path(p) for p in (data, test) if p is not None and Path(p).exists()]
    check_outside(out, local)
    first_episode = 0  # of a live emulator
    if resume or init_from is not None:
        from avg_rt import checkpoint
        from avg_rt.training import resume_episode

        source = out / CHECKPOINT if init_from is None else init_from
        state = checkpoint.load(source)
        if resume:
            check_resumable(state, source)
            first_episode = resume_episode(state)
        saved = state["config"]
        # The network asked for: the preset's (with --form) if --preset is given, else the
        # run's (or the --init-from checkpoint's) own with --form applied.
        model = None
        if preset is not None:
            model = cfg.model
        elif form is not None:
            model = with_form(saved.model, form)
        if chans is not None or vrange:  # the data's format, which must not change
            base = model or saved.model
            model = dataclasses.replace(
                base,
                channels=chans if chans is not None else base.channels,
                value_range=vrange or base.value_range,
            )
        network = (g_leak, select_window, d_spectral_norm, noise_channels)
        if any(v is not None for v in network):
            model = with_network_options(model or saved.model, *network)
        # Inference-only options are free to change on a resume, and kept unless given.
        if model is not None:
            keep = {k: getattr(saved.model, k) for k in INFERENCE_ONLY}
            model = dataclasses.replace(model, **keep)
        if any(v is not None for v in given.values()):
            changes = {k: v for k, v in given.items() if v is not None}
            model = dataclasses.replace(model or saved.model, **changes)
        option = "--resume" if resume else "--init-from"
        cfg, changed = resume_config(saved, model, device, overrides, option)
        if changed:
            what = "resuming" if resume else f"starting from {source}'s config"
            typer.echo(f"{what} with " + ", ".join(changed), err=True)
    if palette == "auto":
        _check_palette_auto(cfg, data, palette_radius)
    if dry_run:
        typer.echo(json.dumps(to_dict(cfg), indent=2))
        return
    resolve_device(cfg.device)

    check_format(cfg, declared, data)
    from avg_rt.data.live import LiveOptions
    from avg_rt.train.distributed import from_env
    from avg_rt.train.loop import TrainingDiverged, TrainingStopped
    from avg_rt.train.loop import train as run
    from avg_rt.training import open_training_data

    live = LiveOptions(
        max_mib=store_mib,
        max_frames=store_frames,
        holdout=holdout,
        stall_seconds=stall_timeout,
        segment_frames=segment_frames,
        max_fps=live_fps,
        start_frames=start_frames,
    )
    main = from_env().is_main  # under torchrun, rank 0 speaks
    with open_training_data(data, cfg, test, mmap_cache, live, first_episode) as d:
        if main:
            typer.echo(f"{d.description}; run folder {out}")
        if palette == "auto":
            cfg = _with_palette(cfg, d.train, palette_radius, main)
        try:
            ckpt = run(
                cfg, d.train, out, d.test, resume=resume, progress=progress, init_from=init_from
            )
        except TrainingStopped as e:
            if main:
                typer.echo(str(e), err=True)
            raise typer.Exit(code=128 + e.signum) from None
        except TrainingDiverged as e:  # every rank stops on it; one line, from rank 0
            if main:
                typer.echo(f"error: {e}", err=True)
            raise typer.Exit(code=1) from None
    if main:
        typer.echo(f"checkpoint: {ckpt}")
