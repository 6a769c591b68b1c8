"""``kws export``: a training checkpoint to one ONNX file with its metadata and model card; ``kws ensemble``: several as one."""

from pathlib import Path
from typing import Optional

import typer

from deploy.cli.app import app


@app.command()
def export(
    checkpoint: Path = typer.Argument(..., help="best.pt of a training run (kws train writes it)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="ONNX file to write (default: model.onnx beside the checkpoint)."),
    threshold: Optional[float] = typer.Option(None, min=0.0, max=1.0, help="Fixed detection threshold on the smoothed keyword score (default: chosen for --target-fa-per-hour)."),
    target_fa_per_hour: float = typer.Option(1.0, min=0.0, help="Without --threshold: choose the threshold with the lowest miss rate at this many false accepts per hour on the validation speakers."),
    smoothing: int = typer.Option(3, min=1, help="Number of hop scores averaged before the threshold."),
    refractory: float = typer.Option(1.0, min=0.0, help="Seconds of silence after a detection."),
    hop_frames: int = typer.Option(8, min=1, help="Feature frames (10 ms each) between two scorings."),
    check_audio: Optional[list[Path]] = typer.Option(None, help="Clips to compare ONNX and PyTorch on (default: the training dataset's)."),
    int8: bool = typer.Option(False, "--int8", help="Also write <name>.int8.onnx: static int8 quantisation calibrated on training clips, compared with float on the test split."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the threshold calibration's progress bar."),
) -> None:
    """Export a checkpoint; the export fails if ONNX and PyTorch disagree on real clips."""
    from deploy.export import export_model

    path = export_model(
        checkpoint, out, threshold=threshold, target_fa_per_hour=target_fa_per_hour, smoothing=smoothing, refractory_s=refractory, hop_frames=hop_frames, check_audio=check_audio,
        int8=int8, progress=progress,
    )
    _describe(path)
    if int8:
        from deploy.quantize import int8_path, int8_summary

        typer.echo(f"int8:  {int8_path(path)} ({int8_path(path).stat().st_size / 1024:.0f} KiB); {int8_summary(path)}")


@app.command()
def ensemble(
    models: list[Path] = typer.Argument(..., help="Two or more exported models (kws export) with the same labels, features, window and hop."),
    out: Path = typer.Option(..., "--out", "-o", help="ONNX file to write."),
    target_fa_per_hour: float = typer.Option(1.0, min=0.0, help="Choose the threshold with the lowest miss rate at this many false accepts per hour on the validation speakers of the first model's dataset."),
) -> None:
    """One model that averages the scores of several: the detector, listener and evaluation run it like any model."""
    from deploy.ensemble import make_ensemble

    _describe(make_ensemble(models, out, target_fa_per_hour=target_fa_per_hour))


def _describe(path: Path) -> None:
    """Print where the model and its card are, and the calibrated operating point."""
    from deploy.modelcard import card_path
    from deploy.modelfile import KwsModel

    typer.echo(f"model: {path} ({path.stat().st_size / 1024:.0f} KiB)")
    typer.echo(f"card:  {card_path(path)}")
    calibration = KwsModel(path).info.metadata.get("calibration")
    if isinstance(calibration, dict):
        typer.echo(
            f"threshold {calibration['threshold']:.4f} (smoothing {calibration['smoothing']}): FRR {100 * calibration['frr']:.1f}% at {calibration['fa_per_hour']:.2f} false accepts/hour "
            f"on the validation speakers ({calibration['n_keywords']} keywords, {60 * calibration['background_hours']:.0f} min of background)"
        )
