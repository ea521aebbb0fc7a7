"""The `mediamatch` command line. User errors print one `error: ...` line and exit 1."""

from __future__ import annotations

import json
import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import click
from pydantic import ValidationError
from tqdm import tqdm

from .auth import is_loopback, new_token
from .catalog import Catalog, Entry
from .client import Client
from .errors import InvalidInput, MediamatchError
from .exchange import FORMATS, ImportReport, export_chunks, import_stream, open_source
from .media import CONTENT_TYPES, json_object, upload_content_type
from .settings import Settings, load_settings
from .signals import SIGNAL_TYPES, compute_signals, configure_signal_types, signal_types_for
from .storage import ObjectStore, sha256_hex
from .versions import IndexVersions


URL_OPTION = click.option("--url", envvar="MEDIAMATCH_URL", help="a running service, e.g. http://127.0.0.1:8000")
TOKEN_OPTION = click.option("--token", envvar="MEDIAMATCH_TOKEN", help="bearer token for --url (default: $MEDIAMATCH_TOKEN)")


class Context:
    def __init__(self, config: str | None, storage: str | None):
        self.config, self.storage_uri = config, storage
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config, storage=self.storage_uri)
            configure_signal_types(self._settings)
        return self._settings

    @property
    def store(self) -> ObjectStore:
        return ObjectStore.from_settings(self.settings)

    def catalog(self) -> Catalog:
        return Catalog(self.store)


@click.group()
@click.option("--storage", help="storage URI: a path, file://... or s3://bucket/prefix (default: settings)")
@click.option("--config", type=click.Path(dir_okay=False), help="YAML settings file")
@click.pass_context
def cli(ctx: click.Context, storage: str | None, config: str | None) -> None:
    """mediamatch: bank known content, hash media, build and publish match indexes."""
    ctx.obj = Context(config, storage)


# -- banks --------------------------------------------------------------------------------------
@cli.group()
def bank() -> None:
    """Create, fill, list, disable and delete banks."""


@bank.command("create")
@click.argument("name")
@click.option("--description", default="")
@click.option("--label", "labels", multiple=True, help="a label attached to every match (repeatable)")
@click.pass_obj
def bank_create(obj: Context, name: str, description: str, labels: tuple[str, ...]) -> None:
    created = obj.catalog().create_bank(name, description, labels)
    click.echo(f"created bank {created.name}")


@bank.command("list")
@click.pass_obj
def bank_list(obj: Context) -> None:
    banks = obj.catalog().list_banks()
    if not banks:
        click.echo("no banks")
        return
    click.echo(f"{'name':<32} {'enabled':<8} {'entries':>8}  labels")
    for b in banks:
        click.echo(f"{b.name:<32} {str(b.enabled).lower():<8} {b.entry_count:>8}  {','.join(b.labels)}")


@bank.command("add")
@click.argument("bank_name", metavar="BANK")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--text", help="bank this text instead of files")
@click.option("--content-type", type=click.Choice(CONTENT_TYPES), help="default: guessed per file")
@click.option("--metadata", help="JSON object stored with every entry")
@URL_OPTION
@TOKEN_OPTION
@click.pass_obj
def bank_add(
    obj: Context, bank_name: str, paths: tuple[Path, ...], text: str | None, content_type: str | None, metadata: str | None, url: str | None, token: str | None
) -> None:
    """Bank files (directories are walked, hidden files skipped) or a text.

    Directly into the storage: every input is read and hashed before the first commit, so an
    unknown bank, an unreadable file or an undecodable image stops the command with nothing
    written. With --url, through a running service: one request (and commit) per file.
    """
    if paths and text is not None:
        raise InvalidInput("give files or directories, or --text, not both")
    if not paths and text is None:
        raise InvalidInput("give files or directories to bank, or --text")
    meta = json_object(metadata, "--metadata")
    if url:
        _bank_add_http(Client(url, token), bank_name, paths, text, content_type, meta)
        return
    settings = obj.settings
    catalog = obj.catalog()
    catalog.get_bank(bank_name)  # unknown bank: fail before any work

    # Pass 1: read and hash everything; keep entries, not bytes (a directory may be large).
    if text is not None:
        sources: list[tuple[str, Callable[[], bytes]]] = [("--text", lambda: text.encode())]
        ctype_of = lambda data, name: "text"  # noqa: E731
    else:
        sources = [(str(p), p.read_bytes) for p in _files(paths)]
        ctype_of = lambda data, name: upload_content_type(data, name, declared=content_type)  # noqa: E731
        if not sources:
            raise InvalidInput("no files found in " + ", ".join(map(str, paths)))
    entries: list[Entry] = []
    for name, read in tqdm(sources, desc="hashing", unit="file", disable=None if len(sources) > 1 else True):
        data = _read(name, read, settings)
        entries.append(_new_entry(settings, bank_name, name, data, ctype_of(data, name), meta))

    # Pass 2: store the media, then commit the entries that name it, a batch per commit.
    added: list[Entry] = []
    batch = settings.commit_batch
    with tqdm(total=len(entries), desc="banking", unit="entry", disable=None if len(entries) > 1 else True) as bar:
        for start in range(0, len(entries), batch):
            chunk = list(zip(sources[start : start + batch], entries[start : start + batch]))
            for (name, read), entry in chunk:
                data = _read(name, read, settings)
                if sha256_hex(data) != entry.media:
                    raise InvalidInput(f"{name} changed while banking; {len(added)} entries were added before it")
                catalog.put_media(data)  # content-addressed: the entry's media digest
            added += catalog.add_entries(bank_name, [entry for _, entry in chunk])
            bar.update(len(chunk))
    click.echo(f"added {len(added)} entries to {bank_name}" + (f": {added[0].entry_id}" if len(added) == 1 else ""))


def _bank_add_http(client: Client, bank_name: str, paths: tuple[Path, ...], text: str | None, content_type: str | None, meta: dict) -> None:
    client.call("GET", f"/v1/banks/{bank_name}")  # an unknown bank fails before any upload
    if text is not None:
        entry = client.add_text(bank_name, text, meta)
        click.echo(f"added 1 entry to {bank_name}: {entry.entry_id}")
        return
    files = _files(paths)
    added = []
    for file in tqdm(files, desc="banking", unit="file", disable=None if len(files) > 1 else True):
        try:
            added.append(client.add_file(bank_name, file, content_type, meta))
        except MediamatchError as exc:
            raise type(exc)(f"{file}: {exc}; {len(added)} files were banked before it") from None
    click.echo(f"added {len(added)} entries to {bank_name}" + (f": {added[0].entry_id}" if len(added) == 1 else ""))


def _files(paths: tuple[Path, ...]) -> list[Path]:
    """Named files as given; directories walked recursively in sorted order, hidden names skipped."""
    out: list[Path] = []
    for path in paths:
        if not path.is_dir():
            out.append(path)
            continue
        for p in sorted(path.rglob("*")):
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts):
                out.append(p)
    return out


def _read(name: str, read: Callable[[], bytes], settings: Settings) -> bytes:
    data = read()
    if len(data) > settings.limits.max_upload_bytes:
        raise InvalidInput(f"{name}: {len(data)} bytes, over the limit of {settings.limits.max_upload_bytes}")
    return data


def _new_entry(settings: Settings, bank: str, name: str, data: bytes, content_type: str, metadata: dict) -> Entry:
    """Cheap signals now (model signals are computed by the reindex job from the stored media)."""
    types = signal_types_for(content_type, include_models=False)
    try:
        signals = compute_signals(data, content_type, types, settings.limits)
    except MediamatchError as exc:
        raise type(exc)(f"{name}: {exc}") from None
    for signal_name, signal in signals.items():
        if signal.value is None:
            tqdm.write(f"warning: {name}: no {signal_name} ({signal.reason})", file=sys.stderr)
    values = {n: s.value for n, s in signals.items() if s.value is not None}
    return Entry(bank=bank, content_type=content_type, signals=values, metadata=metadata, media=sha256_hex(data))


@bank.command("import")
@click.argument("bank_name", metavar="BANK")
@click.argument("source", metavar="FILE|s3://...")
@click.option("--format", "fmt", type=click.Choice(FORMATS), help="default: from the file name, else its first bytes")
@click.option("--batch-size", type=click.IntRange(1), default=50_000, show_default=True, help="entries per catalog commit")
@URL_OPTION
@TOKEN_OPTION
@click.pass_obj
def bank_import(obj: Context, bank_name: str, source: str, fmt: str | None, batch_size: int, url: str | None, token: str | None) -> None:
    """Import a hash list (CSV with a header signal_type,signal[,content_type,labels,metadata,
    external_id], JSON Lines with those fields, or Parquet) into a bank.

    Every row is checked first; a bad row is reported with its line and never banked, good rows
    are committed in batches, and rows the bank holds already (same external_id, else the same
    value) are skipped, so an interrupted import can simply be run again. Exit status 1 when
    any row was bad. With --url, through a running service (the file is streamed to it)."""
    if url:
        report = _import_http(Client(url, token), bank_name, source, fmt)
    else:
        with open_source(obj.settings, source) as (stream, size), tqdm(total=size, desc="importing", unit="B", unit_scale=True, disable=None) as bar:

            def progress(fraction: float, message: str) -> None:
                bar.set_postfix_str(message, refresh=False)
                bar.update(max(0, round(fraction * (size or 0)) - bar.n))

            report = import_stream(obj.catalog(), bank_name, stream, fmt, name=source, size=size, batch_size=batch_size,
                                   progress=progress, on_bad=lambda row: tqdm.write(f"line {row.line}: {row.reason}", file=sys.stderr))
    if report.bad_count:
        raise InvalidInput(report.summary())
    click.echo(report.summary())


def _import_http(client: Client, bank_name: str, source: str, fmt: str | None) -> ImportReport:
    path = Path(source)
    if not path.is_file():
        raise InvalidInput(f"{source}: with --url, give a local file")
    with tqdm(total=100, desc="importing", unit="%", disable=None) as bar:
        report = client.import_file(bank_name, path, fmt, progress=lambda fraction: bar.update(round(fraction * 100) - bar.n))
    for row in report.bad:
        click.echo(f"line {row.line}: {row.reason}", err=True)
    return report


@bank.command("export")
@click.argument("bank_name", metavar="BANK")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="csv", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="default: standard output")
@URL_OPTION
@TOKEN_OPTION
@click.pass_obj
def bank_export(obj: Context, bank_name: str, fmt: str, out: Path | None, url: str | None, token: str | None) -> None:
    """Write every enabled entry of a bank (signals, labels, metadata, external_id) in a form
    `bank import` reads back."""
    chunks = Client(url, token).export(bank_name, fmt) if url else export_chunks(obj.catalog(), bank_name, fmt)
    if out is None:
        if fmt == "parquet" and sys.stdout.isatty():
            raise InvalidInput("Parquet is binary: give --out FILE or redirect the output")
        sink = click.get_binary_stream("stdout")
        for chunk in chunks:
            sink.write(chunk)
        sink.flush()
        return
    tmp = out.with_name(f".{out.name}.partial")
    with open(tmp, "wb") as sink:  # renamed into place when whole
        for chunk in chunks:
            sink.write(chunk)
    tmp.replace(out)
    click.echo(f"wrote {out}", err=True)


@bank.command("disable")
@click.argument("bank_name", metavar="BANK")
@click.argument("entry_id", required=False)
@click.pass_obj
def bank_disable(obj: Context, bank_name: str, entry_id: str | None) -> None:
    """Stop a bank, or one entry of it, from matching."""
    _set_enabled(obj.catalog(), bank_name, entry_id, False)


@bank.command("enable")
@click.argument("bank_name", metavar="BANK")
@click.argument("entry_id", required=False)
@click.pass_obj
def bank_enable(obj: Context, bank_name: str, entry_id: str | None) -> None:
    """Let a disabled bank, or entry, match again."""
    _set_enabled(obj.catalog(), bank_name, entry_id, True)


def _set_enabled(catalog: Catalog, bank_name: str, entry_id: str | None, enabled: bool) -> None:
    if entry_id:
        catalog.update_entry(bank_name, entry_id, enabled=enabled)
    else:
        catalog.update_bank(bank_name, enabled=enabled)
    click.echo(f"{'enabled' if enabled else 'disabled'} {bank_name}{'/' + entry_id if entry_id else ''}")


@bank.command("delete")
@click.argument("bank_name", metavar="BANK")
@click.argument("entry_id", required=False)
@click.option("--yes", is_flag=True, help="do not ask before deleting a whole bank")
@click.pass_obj
def bank_delete(obj: Context, bank_name: str, entry_id: str | None, yes: bool) -> None:
    """Delete a bank (with all its entries), or one entry."""
    catalog = obj.catalog()
    if entry_id:
        catalog.delete_entry(bank_name, entry_id)
    else:
        catalog.get_bank(bank_name)
        if not yes:
            click.confirm(f"delete bank {bank_name} and all its entries?", abort=True)
        catalog.delete_bank(bank_name)
    click.echo(f"deleted {bank_name}{'/' + entry_id if entry_id else ''}")


# -- hashing ------------------------------------------------------------------------------------
@cli.command("hash")
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--text", help="hash this text instead of a file")
@click.option("--content-type", type=click.Choice(CONTENT_TYPES))
@click.pass_obj
def hash_command(obj: Context, file: Path | None, text: str | None, content_type: str | None) -> None:
    """Print every signal of a file or text, one per line."""
    if (file is None) == (text is None):
        raise InvalidInput("give a FILE or --text, not both" if file else "give a FILE or --text")
    data = text.encode() if text is not None else file.read_bytes()
    ctype = "text" if text is not None else upload_content_type(data, str(file), declared=content_type)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no model-loading bars around the output
    for name, signal in compute_signals(data, ctype, limits=obj.settings.limits).items():
        if signal.value is None:
            click.echo(f"{name} - ({signal.reason})")
        elif isinstance(signal.value, list):
            head = " ".join(f"{v:.4f}" for v in signal.value[:4])
            click.echo(f"{name} [{len(signal.value)} floats] {head} ...")
        elif isinstance(signal.value, str) and len(signal.value) > 200:  # keypoints, a video's frames: their head
            click.echo(f"{name} [{len(signal.value)} characters] {signal.value[:60]}...")
        else:
            click.echo(f"{name} {signal.value}" + (f" quality {signal.quality:g}" if signal.quality is not None else ""))


# -- indexes ------------------------------------------------------------------------------------
def _ray_for_job(settings: Settings) -> None:
    """Join the configured Ray cluster (or start a local one) for a batch job, its own bars off."""
    import ray

    if not ray.is_initialized():
        os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
        ray.init(address=settings.ray_address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # our bar says what runs


@contextmanager
def progress_bar(desc: str) -> Iterator[Callable[[float, str], None]]:
    """A progress callback (fraction, message) drawn as one bar on stderr."""
    with tqdm(total=100, desc=desc, unit="%", disable=None, bar_format="{desc:<48.48} {percentage:3.0f}%|{bar}| {elapsed}") as bar:

        def progress(fraction: float, message: str) -> None:
            bar.set_description_str(message)
            bar.update(round(fraction * 100) - bar.n)

        yield progress


@cli.command()
@click.option("--signal-type", "signal_types", multiple=True, type=click.Choice(list(SIGNAL_TYPES)), help="default: all")
@click.option("--shards", type=click.IntRange(1, 1024), help="default: settings index.shards")
@click.pass_obj
def reindex(obj: Context, signal_types: tuple[str, ...], shards: int | None) -> None:
    """Rebuild the indexes from the catalog with a Ray Data job, and publish them."""
    from mediamatch.indexing.reindex import reindex as run_reindex

    settings = obj.settings
    _ray_for_job(settings)
    with progress_bar("reindex") as progress:
        published = run_reindex(settings, list(signal_types) or None, shards, progress)
    for name, m in published.items():
        recall = f"{m.recall_at_10:.3f}" if m.recall_at_10 is not None else "-"
        click.echo(f"{name:<16} {m.version}  {m.count:>9} entries  {m.params.type:<16} recall@10 {recall}  {m.build_seconds:.1f}s")


@cli.group()
def index() -> None:
    """List index versions and move the published pointer."""


@index.command("list")
@click.option("--all", "show_all", is_flag=True, help="every recorded version, * marks the published one")
@click.pass_obj
def index_list(obj: Context, show_all: bool) -> None:
    store = obj.store
    for name in SIGNAL_TYPES:
        versions = IndexVersions(store, name)
        current = versions.current_version()
        manifests = versions.list() if show_all else ([versions.get(current)] if current else [])
        if not manifests:
            click.echo(f"{name:<16} (no index)")
        for m in manifests:
            mark = "*" if m.version == current else " "
            click.echo(f"{name:<16} {mark}{m.version}  {m.count:>9} entries  {len(m.shards)} shards  {m.params.type:<16} built {m.built_at}")


@index.command("rollback")
@click.argument("signal_type", type=click.Choice(list(SIGNAL_TYPES)))
@click.argument("version")
@click.pass_obj
def index_rollback(obj: Context, signal_type: str, version: str) -> None:
    """Publish an earlier (or any recorded) version of a signal type's index."""
    manifest = IndexVersions(obj.store, signal_type).rollback(version)
    click.echo(f"{signal_type} now serves {manifest.version} ({manifest.count} entries)")


# -- models and evaluation -------------------------------------------------------------------------
@cli.group()
def model() -> None:
    """Train, list, promote and export image descriptor models (stored under models/ in the store)."""


@model.command("train")
@click.argument("sources", nargs=-1, required=True)
@click.option("--holdout", required=True, help="folder or prefix of held-out images for the evaluation (never trained on)")
@click.option("--epochs", type=click.IntRange(1), default=20, show_default=True)
@click.option("--batch-size", type=click.IntRange(8), default=128, show_default=True)
@click.option("--lr", type=float, default=2e-3, show_default=True)
@click.option("--koleo", type=click.FloatRange(0), default=0.0, show_default=True,
              help="weight of the entropy (KoLeo) regulariser that spreads descriptors apart")
@click.option("--init", help="fine-tune this model (a version, promoted or default) instead of starting from random weights")
@click.option("--workers", type=click.IntRange(0), default=1, show_default=True, help="processes making edited views")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--limit", type=click.IntRange(1), help="train on at most this many images")
@click.option("--eval-originals", type=click.IntRange(1), default=200, show_default=True)
@click.option("--eval-distractors", type=click.IntRange(1), default=200, show_default=True)
@click.pass_obj
def model_train(obj: Context, sources: tuple[str, ...], holdout: str, epochs: int, batch_size: int, lr: float, koleo: float,
                init: str | None, workers: int, seed: int, limit: int | None, eval_originals: int, eval_distractors: int) -> None:
    """Train a descriptor on the images under SOURCES (folders or s3:// prefixes), evaluate and
    calibrate it on --holdout, and record it as a new model version (not promoted)."""
    from mediamatch.indexing.train import train_model
    from mediamatch.platform.models.train import TrainSettings

    settings = obj.settings
    _ray_for_job(settings)
    with progress_bar("model train") as progress:
        record = train_model(settings, list(sources), holdout, train_settings=TrainSettings(epochs=epochs, batch_size=batch_size, lr=lr, koleo=koleo, workers=workers, seed=seed),
                             eval_originals=eval_originals, eval_distractors=eval_distractors, limit=limit, progress=progress, init=init)
    _echo_model(record, promoted=False)


@model.command("calibrate")
@click.argument("version")
@click.option("--holdout", required=True, multiple=True, help="folder or prefix of held-out images (never trained on, never "
              "evaluated on); repeatable: the images are pooled")
@click.option("--eval-originals", type=click.IntRange(1), default=200, show_default=True)
@click.option("--eval-distractors", type=click.IntRange(1), default=200, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.pass_obj
def model_calibrate(obj: Context, version: str, holdout: tuple[str, ...], eval_originals: int, eval_distractors: int, seed: int) -> None:
    """Evaluate VERSION (a recorded version, promoted or default) on --holdout and record it again
    (same weights) with the thresholds it calls for there: a photo's at precision 0.99, a video
    frame's at 0.8."""
    from mediamatch.indexing.train import calibrate_model

    with progress_bar("model calibrate") as progress:
        record = calibrate_model(obj.settings, version, list(holdout), eval_originals, eval_distractors, seed, progress)
    _echo_model(record, promoted=False)


@model.command("list")
@click.pass_obj
def model_list(obj: Context) -> None:
    """Every recorded model version; * marks the promoted one."""
    from .models.registry import ModelVersions

    versions = ModelVersions(obj.store)
    promoted = versions.promoted()
    for record in versions.list():
        _echo_model(record, record.version == promoted)
    if promoted is None:
        click.echo("(none promoted: the service uses the packaged default model)")


@model.command("promote")
@click.argument("version")
@click.pass_obj
def model_promote(obj: Context, version: str) -> None:
    """Make VERSION the model services load (at their next start); reindex image_embedding after."""
    from .models.registry import ModelVersions

    record = ModelVersions(obj.store).promote(version)
    click.echo(f"promoted {record.version}: restart or redeploy the service, then `mediamatch reindex --signal-type image_embedding`")


@model.command("export")
@click.argument("version")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.pass_obj
def model_export(obj: Context, version: str, folder: Path) -> None:
    """Write VERSION's files (config, weights, evaluation report) to FOLDER: the packaged default
    model is such a folder."""
    from .models.registry import ModelVersions

    versions = ModelVersions(obj.store)
    record = versions.get(version)
    folder.mkdir(parents=True, exist_ok=True)
    for key in record.files:
        name = key.rsplit("/", 1)[1]
        data = versions.file(record, name)
        if name == "config.json":  # the record's copy: it names the version, known only once committed
            data = record.config.model_dump_json(indent=1).encode()
        (folder / name).write_bytes(data)
    click.echo(f"wrote {len(record.files)} files of {version} to {folder}")


def _echo_model(record, promoted: bool) -> None:
    c = record.config
    threshold = f"{c.threshold:.4f}" if c.threshold is not None else "-"
    if c.frame_threshold is not None:
        threshold += f" (video frame {c.frame_threshold:.4f})"
    uap = c.evaluation.get("micro_ap")
    click.echo(f"{'*' if promoted else ' '} {record.version}  {record.created_at}  {c.training.get('images', 0):>6} images  "
               f"{c.training.get('epochs', 0):>3} epochs  threshold {threshold}  µAP {uap if uap is not None else '-'} "
               f"(pdq {c.evaluation.get('pdq', {}).get('micro_ap', '-')})")


@cli.command("eval")
@click.argument("sources", nargs=-1)
@click.option("--photos", "photo_sources", multiple=True, help="a folder or s3:// prefix of images (repeatable; SOURCES are photos too)")
@click.option("--photographs", is_flag=True, help="also the real photographs installed (opencv-doc, palapeli-data, scikit-image, "
              "scikit-learn samples), in a section of their own; half of them banked, at most --originals")
@click.option("--videos", "video_sources", multiple=True, help="a folder or prefix of videos (repeatable)")
@click.option("--audio", "audio_sources", multiple=True, help="a folder or prefix of sound files (repeatable)")
@click.option("--text", "text_sources", multiple=True, help="a folder or prefix of documents and man pages (repeatable)")
@click.option("--originals", "--photo-originals", "originals", type=click.IntRange(1), default=200, show_default=True, help="photos banked")
@click.option("--distractors", "--photo-distractors", "distractors", type=click.IntRange(1), default=200, show_default=True,
              help="photos never banked, queried too")
@click.option("--sounds", type=click.IntRange(1), default=30, show_default=True, help="the longest distinct sound files taken from --audio")
@click.option("--speech", type=click.IntRange(0), default=0, show_default=True, help="audio items spoken by espeak-ng from --speech-from documents")
@click.option("--speech-from", "speech_sources", multiple=True, default=("/usr/share/doc",), show_default=True, help="documents to speak (repeatable)")
@click.option("--text-bank", type=click.IntRange(1), default=500, show_default=True, help="passages banked")
@click.option("--text-distractors", type=click.IntRange(1), default=500, show_default=True, help="passages never banked, queried too")
@click.option("--text-per-edit", type=click.IntRange(1), default=100, show_default=True, help="banked passages queried under each edit")
@click.option("--man-pages", type=click.IntRange(0), default=400, show_default=True, help="man pages sampled from --text sources")
@click.option("--signal-type", "signal_types", multiple=True, type=click.Choice(list(SIGNAL_TYPES)),
              help="only these signal types (default: photo pdq, image_embedding; video vpdq, video_embedding, md5; "
                   "audio audio_fingerprint, md5; text text_exact, text_minhash, text_embedding)")
@click.option("--edit", "edits", multiple=True,
              help="only these edits (repeatable; a content type none of whose edits is named runs its whole suite)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("eval-report"), show_default=True)
@URL_OPTION
@TOKEN_OPTION
@click.pass_obj
def eval_command(obj: Context, sources: tuple[str, ...], photo_sources: tuple[str, ...], photographs: bool, video_sources: tuple[str, ...],
                 audio_sources: tuple[str, ...], text_sources: tuple[str, ...], originals: int, distractors: int, sounds: int, speech: int,
                 speech_sources: tuple[str, ...], text_bank: int, text_distractors: int, text_per_edit: int, man_pages: int,
                 signal_types: tuple[str, ...], edits: tuple[str, ...], seed: int, out: Path, url: str | None, token: str | None) -> None:
    """Measure match quality of every content type given: bank items, query seeded edits of them
    and of never-banked distractors, and write one report (OUT/eval.md, eval-<type>.png per
    content type, eval.json): µAP, recall at precision 0.90/0.99 and at the served thresholds, and
    per-edit tables, per signal type and their combination. Photos: SOURCES and --photos, and
    --photographs (real photographs, a section of their own); videos: --videos; audio: --audio
    and/or --speech; text: --text. With --url the items go through that
    service's API (the real match path; a temporary bank per content type); without it, through
    the same signal code, catalog and live index in this process."""
    from .evaluation import core, photo, video, audio, text
    from .evaluation.report import write_report

    photo_sources = sources + photo_sources
    suites = {"photo": photo.EDITS, "video": video.SUITE, "audio": audio.SUITE, "text": text.SUITE}
    defaults = {"photo": photo.SIGNALS, "video": video.SIGNALS, "audio": audio.SIGNALS, "text": text.SIGNALS}
    unknown = [e for e in edits if not any(e in suite for suite in suites.values())]
    if unknown:
        known = "; ".join(f"{kind}: {', '.join(suite)}" for kind, suite in suites.items())
        raise InvalidInput(f"unknown edit {unknown[0]!r}; known: {known}")
    loaders = {
        "photo": photo_sources and (lambda chosen: photo.load(photo_sources, originals, distractors, seed, chosen)),
        "photographs": photographs and (lambda chosen: photo.load_photographs(originals, distractors, seed, chosen)),
        "video": video_sources and (lambda chosen: video.load_material(video_sources, seed, chosen)),
        "audio": (audio_sources or speech) and (lambda chosen: audio.load_material(audio_sources, sounds, speech, speech_sources, seed, chosen)),
        "text": text_sources and (lambda chosen: text.load_material(text_sources, text_bank, text_distractors, text_per_edit, man_pages, seed, chosen)),
    }
    if not any(loaders.values()):
        raise InvalidInput("nothing to evaluate: give photos (SOURCES, --photos or --photographs), --videos, --audio or --speech, or --text")
    jobs = []
    for section, load in loaders.items():
        if not load:
            continue
        kind = "photo" if section == "photographs" else section
        chosen = core.chosen_edits(edits, suites[kind])
        names = [n for n in signal_types if kind in SIGNAL_TYPES[n].content_types] if signal_types else list(defaults[kind])
        if not names:
            raise InvalidInput(f"no --signal-type given serves {kind}; those that do: {', '.join(s.name for s in signal_types_for(kind))}")
        jobs.append(core.Job(kind, names, lambda load=load, chosen=chosen: load(chosen), section))
    settings = obj.settings

    def matcher(kind: str, names: list[str]):
        if url:
            return core.ServiceMatcher(Client(url, token, retries=3), names, kind)
        return core.LocalMatcher([SIGNAL_TYPES[n] for n in names], settings.limits, content_type=kind, verify=settings.verify,
                                 fusion=SIGNAL_TYPES["image_embedding"].config.fusion if "image_embedding" in names else None)

    with progress_bar("eval") as progress:
        results = core.run_jobs(jobs, matcher, progress)
    where = f"through {url}" if url else "in process"
    paths = write_report(results, out, "Match quality", [f"Seed {seed}; queries {where}."])
    for result in results:
        for name, row in result.summary()["signals"].items():
            click.echo(f"{result.name:<6} {name:<17} µAP {row['micro_ap']:.3f}  recall@P90 {row['recall_at_p90']:.3f}  "
                       f"recall@P99 {row['recall_at_p99']:.3f}  at threshold: recall {row['recall_at_threshold']:.3f}, "
                       f"{row['answered_false']} false")
    click.echo("wrote " + ", ".join(str(p) for p in paths))


# -- the service --------------------------------------------------------------------------------
@cli.command("serve")
@click.option("--host", help="address to listen on (default: settings, 127.0.0.1)")
@click.option("--port", type=click.IntRange(1, 65535), help="default: settings, 8000")
@click.option("--address", help="an existing Ray cluster (e.g. auto or ray://head:10001); deploy there and return")
@click.pass_obj
def serve_command(obj: Context, host: str | None, port: int | None, address: str | None) -> None:
    """Run the match service: a local Ray instance and the Serve application, until Ctrl-C
    (or SIGTERM)."""
    import signal
    import socket
    import threading

    import ray
    from ray import serve

    from mediamatch.deployments.app import build_app, data_plane_env

    settings = load_settings(obj.config, storage=obj.storage_uri, host=host, port=port, ray_address=address)
    if not settings.tokens and not is_loopback(settings.host):
        click.echo(f"warning: no tokens configured, so the service is anonymous and listens on 127.0.0.1, not {settings.host}", err=True)
        settings = settings.model_copy(update={"host": "127.0.0.1"})
    if not settings.ray_address:
        with socket.socket() as probe:  # Serve's proxy would share a busy port silently
            if probe.connect_ex((settings.host, settings.port)) == 0:
                raise InvalidInput(f"{settings.host}:{settings.port} is in use (another mediamatch serve?): stop it or pass --port")
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    if not settings.ray_address:  # Serve reads its data plane from the environment Ray starts with
        os.environ.update(data_plane_env(settings.serve.data_plane))
    # A local instance gets at least 4 logical CPUs: replicas take fractions and mostly wait,
    # and a reindex job started over HTTP needs whole CPUs for its Ray Data tasks beside them.
    local = {} if settings.ray_address else {"num_cpus": max(4, os.cpu_count() or 1), "_metrics_export_port": settings.metrics_export_port}
    ray.init(address=settings.ray_address, include_dashboard=False, configure_logging=False, **local)
    serve.start(http_options={"host": settings.host, "port": settings.port})
    serve.run(build_app(settings), name="mediamatch", route_prefix="/")
    anonymous = " (anonymous: loopback clients only)" if not settings.tokens else ""
    click.echo(f"mediamatch listening on http://{settings.host}:{settings.port}{anonymous}; storage {settings.storage}")
    if settings.ray_address:
        return  # the application lives on the cluster
    node = next(n for n in ray.nodes() if n["NodeID"] == ray.get_runtime_context().get_node_id())
    click.echo(f"metrics of every replica (Ray's Prometheus endpoint): http://127.0.0.1:{node['MetricsExportPort']}/metrics")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # Ray's driver does not turn them into KeyboardInterrupt
        signal.signal(sig, lambda *_: stop.set())
    click.echo("Ctrl-C stops it")
    stop.wait()
    click.echo("stopping")
    serve.shutdown()
    ray.shutdown()


@cli.command("match")
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--text", help="match this text instead of a file")
@click.option("--banks", help="comma-separated banks to match against (default: all)")
@click.option("--signal-types", help="comma-separated signal types (default: all that apply)")
@click.option("--url", envvar="MEDIAMATCH_URL", default="http://127.0.0.1:8000", show_default=True, help="the service")
@TOKEN_OPTION
@click.option("--json", "as_json", is_flag=True, help="print the service's whole answer")
def match_command(file: Path | None, text: str | None, banks: str | None, signal_types: str | None, url: str, token: str | None, as_json: bool) -> None:
    """Match a file or text against the banks of a running service; one line per match."""
    if (file is None) == (text is None):
        raise InvalidInput("give a FILE or --text, not both" if file else "give a FILE or --text")
    client = Client(url, token)
    if file is not None:
        result = client.match_file(file, banks, signal_types)
    else:
        split = lambda v: [x.strip() for x in v.split(",") if x.strip()] if v else None  # noqa: E731
        result = client.match_text(text, split(banks), split(signal_types))
    if as_json:
        click.echo(result.model_dump_json(indent=2))
        return
    for m in result.matches:
        click.echo(f"{m.bank:<24} {m.entry_id}  {m.signal_type:<14} distance {m.distance:g}  score {m.score:.3f}  {','.join(m.labels)}"
                   + (f"  ({m.transform})" if m.transform else ""))
    click.echo(f"{len(result.matches)} matches in {result.took_ms:.1f} ms")


@cli.group()
def token() -> None:
    """Client team tokens."""


@token.command("create")
@click.option("--team", required=True)
@click.option("--role", "roles", multiple=True, required=True, type=click.Choice(["match", "bank_write", "admin"]))
@click.option("--bank", "banks", multiple=True, help="limit bank_write to this bank (repeatable)")
def token_create(team: str, roles: tuple[str, ...], banks: tuple[str, ...]) -> None:
    """Make a token: give the token to the team, put the printed settings entry in the config."""
    secret, digest = new_token()
    entry = {"team": team, "token_sha256": digest, "roles": list(roles)} | ({"banks": list(banks)} if banks else {})
    click.echo(f"token (shown once): {secret}")
    click.echo("settings entry (under `tokens:` in the YAML config):")
    click.echo("  - " + json.dumps(entry))


# -- capacity planning ----------------------------------------------------------------------------
@cli.command("loadtest")
@click.option("--url", envvar="MEDIAMATCH_URL", default="http://127.0.0.1:8000", show_default=True)
@TOKEN_OPTION
@click.option("--rates", default="5,10,20,40,80", show_default=True, help="offered requests per second, one step each")
@click.option("--step-seconds", type=click.FloatRange(1, 3600), default=20, show_default=True)
@click.option("--warmup-seconds", type=click.FloatRange(0, 600), default=5, show_default=True, help="at the first rate, not counted")
@click.option("--mix", default="hash=60,photo=20,text=15,bank=5", show_default=True, help="request kinds and weights")
@click.option("--max-requests", type=click.IntRange(1), help="at most this many requests per step")
@click.option("--photos", type=click.Path(exists=True, file_okay=False), help="photos to upload (default: generated ones)")
@click.option("--slo-p99-ms", type=click.FloatRange(0, min_open=True), help="a step over this p99 counts as saturated")
@click.option("--out", default="loadtest-report", show_default=True, help="folder for loadtest.json and loadtest.png")
@click.option("--seed", type=int, default=0)
@click.option("--soak", "soak_minutes", type=click.FloatRange(0.5, 24 * 60), help="instead of steps: this many minutes at one rate (a local service)")
@click.option("--capacity-qps", type=click.FloatRange(0, min_open=True), help="with --soak: run at 70% of this capacity (else the one --rates value)")
@click.option("--sample-seconds", type=click.FloatRange(5, 600), default=60, show_default=True, help="with --soak: p99 and replica memory per this period")
def loadtest_command(url, token, rates, step_seconds, warmup_seconds, mix, max_requests, photos, slo_p99_ms, out, seed, soak_minutes, capacity_qps, sample_seconds) -> None:
    """Drive a running service at stepped open-loop rates; report latency, throughput, errors
    and the saturation point (JSON + PNG). With --soak: one rate for MINUTES, and a verdict on
    errors, p99 drift and the replicas' memory growth (exit status 1 when one fails)."""
    import asyncio

    from .loadtest import LoadTest, Payloads, parse_mix, saturation, write_report

    weights = parse_mix(mix)
    if soak_minutes is not None:
        if capacity_qps is None and len(_rates(rates)) != 1:
            raise InvalidInput("--soak runs at one rate: give --capacity-qps or a single --rates value")
        rate = 0.7 * capacity_qps if capacity_qps else _rates(rates)[0]
        _soak(url, LoadTest(url, token, weights, Payloads.make(photos, seed), seed=seed), rate, soak_minutes, sample_seconds, warmup_seconds, out)
        return
    steps_qps = _rates(rates)
    client = Client(url, token)
    shape = _shape(client, url)
    test = LoadTest(url, token, weights, Payloads.make(photos, seed), seed=seed)
    bars: list[tqdm] = []

    def progress(label: str, total: int):
        bar = tqdm(total=total, desc=label, unit="req", disable=None, leave=True)
        bars.append(bar)
        return bar.update

    try:
        steps = asyncio.run(test.run(steps_qps, step_seconds, max_requests, progress, warmup_seconds))
    finally:
        for bar in bars:
            bar.close()
    report = {"url": url, "mix": weights, "step_seconds": step_seconds, "warmup_seconds": warmup_seconds, "slo_p99_ms": slo_p99_ms, "shape": shape, "steps": steps}
    report["saturation_qps"] = saturation(steps, slo_p99_ms)
    json_path, png_path = write_report(report, out)
    click.echo(f"{'offered':>8} {'achieved':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for st in steps:
        click.echo(f"{st['offered_qps']:>8g} {st['achieved_qps']:>9.1f} {st['p50_ms'] or 0:>8.1f} {st['p95_ms'] or 0:>8.1f} {st['p99_ms'] or 0:>8.1f} {100 * st['error_rate']:>6.1f}%")
    saturated = report["saturation_qps"]
    click.echo(f"saturation: {f'{saturated:g} req/s offered' if saturated else 'not reached'}; report {json_path}, plot {png_path}")


def _soak(url: str, test, rate: float, minutes: float, period: float, warmup: float, out: str) -> None:
    import asyncio
    from urllib.parse import urlparse

    from .loadtest import replica_memory, serving_raylet, soak_report

    where = urlparse(url)
    if not is_loopback(where.hostname or ""):
        raise InvalidInput(f"--soak drives a service on this machine (it reads its replicas' memory here), not {where.hostname}")
    raylet = serving_raylet(where.port or 80)
    if raylet is None or not replica_memory(raylet):
        raise InvalidInput(f"no Ray node on this machine serves mediamatch on port {where.port or 80}: start `mediamatch serve` first")
    periods = max(1, round(minutes * 60 / period))
    click.echo(f"soak: {rate:g} req/s for {periods} x {period:g} s, mix {test.mix}")

    def show(i: int, step, memory: dict[str, int]) -> None:
        summary = step.summary()
        click.echo(f"  {(i + 1) * period / 60:6.1f} min: {summary['sent']} sent, {sum(step.errors.values())} errors, "
                   f"p99 {summary['p99_ms'] or 0:.1f} ms, replicas {sum(memory.values()) / 2**20:,.0f} MiB resident")

    steps, samples = asyncio.run(test.soak(rate, periods, period, lambda: replica_memory(raylet), show, warmup))
    report = soak_report(rate, period, steps, samples) | {"url": url, "mix": test.mix, "minutes": minutes}
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "soak.json")
    Path(path).write_text(json.dumps(report, indent=2))
    first, last = report["first_window"], report["last_window"]
    window = round(report["window_periods"] * period / 60, 2)
    click.echo(f"requests {report['total']['sent']}, errors {report['total']['errors']} {report['errors'] or ''}")
    click.echo(f"p99 first {window:g} min {first['p99_ms']} ms, last {window:g} min {last['p99_ms']} ms (x{report['p99_ratio']})")
    for name, growth in sorted(report["rss_growth"].items()):
        click.echo(f"  {name:<32} {report['rss_after_warmup'][name] / 2**20:8.1f} -> {report['rss_end'][name] / 2**20:8.1f} MiB ({growth:+.1%})")
    for key, what in (("replaced", "replaced during the soak"), ("scaled_down", "stopped by autoscaling"), ("started", "started during the soak")):
        for name in report[key]:
            click.echo(f"  {name:<32} {what}")
    for check, ok in report["checks"].items():
        click.echo(f"{'pass' if ok else 'FAIL'}: {check}")
    click.echo(f"report {path}")
    if not report["passed"]:
        click.get_current_context().exit(1)


def _rates(text: str) -> list[float]:
    try:
        rates = [float(r) for r in text.split(",") if r.strip()]
    except ValueError:
        raise InvalidInput(f"--rates must be numbers separated by commas, not {text!r}") from None
    if not rates or min(rates) <= 0:
        raise InvalidInput("--rates must be positive")
    return rates


def _shape(client: Client, url: str) -> dict:
    """The measured service's deployments and resources (an admin token reads them; else one
    replica each on this machine's cores, which is what `mediamatch serve` runs)."""
    try:
        shape = client.call("GET", "/v1/deployments")
        return {"deployments": shape["deployments"], "cpus": shape["cpus"], "gpus": shape["gpus"], "source": "GET /v1/deployments"}
    except MediamatchError as exc:
        tqdm.write(f"note: the service's shape is unknown ({exc}); assuming one replica per deployment on {os.cpu_count()} cores", file=sys.stderr)
        from mediamatch.deployments.app import deployment_names

        names = deployment_names(load_settings())
        return {"deployments": {n: {"replicas": 1} for n in names}, "cpus": os.cpu_count(), "gpus": 0, "source": "assumed"}


@cli.command("capacity")
@click.argument("report", type=click.Path(exists=True, dir_okay=False))
@click.option("--target-qps", type=click.FloatRange(0, min_open=True), required=True)
@click.option("--p99-ms", type=click.FloatRange(0, min_open=True), required=True)
@click.option("--json", "as_json", is_flag=True)
def capacity_command(report: str, target_qps: float, p99_ms: float, as_json: bool) -> None:
    """What TARGET-QPS at p99 <= P99-MS costs, from a loadtest report (loadtest.json)."""
    from .loadtest import capacity

    try:
        data = json.loads(Path(report).read_text())
        answer = capacity(data, target_qps, p99_ms)
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InvalidInput(f"{report} is not a mediamatch loadtest report ({type(exc).__name__}: {exc})") from None
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    m = answer["measured"]
    click.echo(f"measured: {m['sustained_qps']:g} req/s sustained at p99 {m['p99_ms']:g} ms on {m['cpus']} CPUs, {m['gpus']:g} GPUs")
    click.echo(f"{target_qps:g} req/s at p99 <= {p99_ms:g} ms: {answer['copies']} x that = {answer['cpus']} CPUs, {answer['gpus']:g} GPUs")
    click.echo("Serve deployments (serve_config.yaml):")
    for name, d in answer["deployments"].items():
        a = d["autoscaling_config"]
        click.echo(f"  - name: {name}\n    autoscaling_config: {{min_replicas: {a['min_replicas']}, max_replicas: {a['max_replicas']}, target_ongoing_requests: {a['target_ongoing_requests']}}}")
    click.echo(f"assumes {answer['assumption']}")


def main() -> None:
    """The console script: user errors are one `error: ...` line on stderr and exit status 1;
    usage errors keep click's message and status 2."""
    try:
        code = cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (MediamatchError, OSError, ValidationError, ValueError) as exc:
        click.echo(f"error: {error_line(exc)}", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


def error_line(exc: Exception) -> str:
    """One line for a user error (a file, a storage URI, a settings value, a catalog rule)."""
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        return f"invalid {exc.title.lower()}: {where + ': ' if where else ''}{first['msg']}{more}"
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
