"""Weights named on the Hugging Face Hub: ``hf://ORG/REPO/FILE[@REVISION]`` and the official AnyDepth aliases.

:func:`resolve_weights` is the one place where a weights *name* becomes a local *path*. The library calls it where a
weights path enters it (``load_model(path)`` and ``create_model(encoder_weights=)``; the CLI flags ``--checkpoint``
and ``--encoder-weights`` go through those), so every entry point accepts:

* a local file or directory (returned unchanged, never looked up on the Hub, even if it looks like a Hub name);
* ``hf://ORG/REPO/PATH/IN/REPO[@REVISION]``: downloaded with ``huggingface_hub`` into its cache (``HF_HUB_CACHE``,
  default ``~/.cache/huggingface/hub``) and reused from there; ``REVISION`` (branch, tag or commit hash) pins the
  version; with ``HF_HUB_OFFLINE=1`` only the cache is read;
* a short alias of an official release (:data:`ALIASES`), e.g. ``anydepth/dav2_sdt_vitb`` =
  ``hf://AIGeeksGroup/AnyDepth/dav2_sdt_vitb.pth`` (``@REVISION`` may follow an alias too).

Integrity: a repository written by :func:`push_checkpoint` holds ``SHA256SUMS``; when the cache (or the Hub) has it,
every file resolved from that repository is checked against it. A decoder-only checkpoint additionally records the
SHA-256 of the encoder weights it was trained with, which ``load_model`` verifies after both were resolved.

Publishing: :func:`push_checkpoint` uploads a project checkpoint as ``model.safetensors`` together with a model card
(``README.md``: configuration, training data, metrics, licence), ``metrics.json`` when given and ``SHA256SUMS``.
Needs the optional extra ``hub`` (``pip install 'anydepth[hub]'``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anydepth.atomic import json_text
from anydepth.extras import require

__all__ = [
    "ALIASES",
    "HubName",
    "OFFICIAL_REPO",
    "SUMS_FILE",
    "file_sha256",
    "is_hub_name",
    "model_card",
    "parse_hub_name",
    "push_checkpoint",
    "resolve_weights",
]

PREFIX = "hf://"
OFFICIAL_REPO = "AIGeeksGroup/AnyDepth"
# The released files of the official repository: the README's "Weights" section (``anydepth.models.official.
# RELEASES``) lists dav2_sdt_vitb.pth and da3_sdt_vitl.pth; GitHub issue AIGeeksGroup/AnyDepth#13 loads
# dav2_sdt_vitl.pth from the same Hugging Face repository.
ALIASES: dict[str, str] = {
    "anydepth/dav2_sdt_vitb": f"{PREFIX}{OFFICIAL_REPO}/dav2_sdt_vitb.pth",
    "anydepth/dav2_sdt_vitl": f"{PREFIX}{OFFICIAL_REPO}/dav2_sdt_vitl.pth",
    "anydepth/da3_sdt_vitl": f"{PREFIX}{OFFICIAL_REPO}/da3_sdt_vitl.pth",
}
SUMS_FILE = "SHA256SUMS"
CHECKPOINT_FILE = "model.safetensors"
_REPO_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class HubName:
    """A file in a Hugging Face model repository.

    Attributes:
        repo_id: ``ORG/REPO``.
        filename: path of the file inside the repository (``/``-separated).
        revision: branch, tag or commit hash; ``None`` = the default branch (``main``).
    """

    repo_id: str
    filename: str
    revision: str | None = None

    def __str__(self) -> str:
        return f"{PREFIX}{self.repo_id}/{self.filename}" + (f"@{self.revision}" if self.revision else "")


def _split_revision(text: str) -> tuple[str, str | None]:
    base, at, rev = text.rpartition("@")
    if not at or "/" in rev:
        return text, None
    return base, rev


def parse_hub_name(name: str) -> HubName | None:
    """Parse ``hf://ORG/REPO/FILE[@REVISION]`` or an alias (``anydepth/dav2_sdt_vitb[@REVISION]``).

    Returns:
        The :class:`HubName`, or ``None`` when ``name`` is neither (a local path).

    Raises:
        ValueError: ``name`` starts with ``hf://`` but is malformed (no file, empty revision, bad repository id).
    """
    base, rev = _split_revision(name)
    if base in ALIASES:
        hub = parse_hub_name(ALIASES[base])
        assert hub is not None
        return HubName(hub.repo_id, hub.filename, rev or hub.revision)
    if not name.startswith(PREFIX):
        return None
    if name.endswith("@"):
        raise ValueError(f"{name!r}: empty revision after '@' (expected hf://ORG/REPO/FILE[@REVISION])")
    parts = base[len(PREFIX) :].split("/")
    if len(parts) < 3 or not all(parts):
        raise ValueError(f"{name!r}: expected hf://ORG/REPO/FILE[@REVISION] (a file inside a repository)")
    org, repo, filename = parts[0], parts[1], "/".join(parts[2:])
    if not (_REPO_PART.match(org) and _REPO_PART.match(repo)):
        raise ValueError(f"{name!r}: {org}/{repo} is not a valid Hugging Face repository id")
    if any(p in (".", "..") for p in parts[2:]):
        raise ValueError(f"{name!r}: the file path may not contain '.' or '..' components")
    return HubName(f"{org}/{repo}", filename, rev)


def is_hub_name(name: str | os.PathLike[str]) -> bool:
    """True if ``name`` is an ``hf://`` name or an alias and no local file or directory of that name exists."""
    return isinstance(name, str) and not Path(name).exists() and parse_hub_name(name) is not None


def _offline() -> bool:
    hub_constants = require("huggingface_hub.constants", "Hugging Face Hub names (hf://)")
    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return env.strip().upper() in {"1", "ON", "YES", "TRUE"} or bool(hub_constants.HF_HUB_OFFLINE)


def _cache_dir(cache_dir: str | os.PathLike[str] | None) -> str | None:
    if cache_dir is not None:
        return os.fspath(cache_dir)
    return os.environ.get("HF_HUB_CACHE") or None  # None: huggingface_hub's default (HF_HOME/hub)


def _endpoint(endpoint: str | None) -> str | None:
    return (
        endpoint or os.environ.get("HF_ENDPOINT") or None
    )  # None: huggingface_hub's default (huggingface.co)


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _download(
    hub: HubName, filename: str, *, cache_dir: str | None, offline: bool, endpoint: str | None
) -> Path:
    hf = require("huggingface_hub", "Hugging Face Hub names (hf://)")
    try:
        path = hf.hf_hub_download(
            hub.repo_id,
            filename,
            revision=hub.revision,
            cache_dir=cache_dir,
            local_files_only=offline,
            endpoint=endpoint,
            library_name="anydepth",
        )
    except hf.errors.LocalEntryNotFoundError as e:
        where = f"the cache {cache_dir}" if cache_dir else "the Hugging Face cache"
        raise FileNotFoundError(
            f"{hub.repo_id}/{filename}"
            + (f"@{hub.revision}" if hub.revision else "")
            + f" is not in {where}"
            + (" and HF_HUB_OFFLINE is set" if offline else " and the Hub could not be reached")
            + f" (prefetch it with: anydepth download {hub})"
        ) from e
    except (
        hf.errors.RepositoryNotFoundError,
        hf.errors.RevisionNotFoundError,
        hf.errors.EntryNotFoundError,
    ) as e:
        raise FileNotFoundError(f"{hub}: {type(e).__name__}: {str(e).splitlines()[0]}") from e
    return Path(path)


def _expected_sha256(
    hub: HubName, *, cache_dir: str | None, offline: bool, endpoint: str | None
) -> str | None:
    """The SHA-256 recorded for ``hub.filename`` in the repository's ``SHA256SUMS``, if the repository has one."""
    if hub.filename == SUMS_FILE:
        return None
    try:
        sums = _download(hub, SUMS_FILE, cache_dir=cache_dir, offline=offline, endpoint=endpoint)
    except FileNotFoundError:
        return None
    for line in sums.read_text(encoding="utf-8").splitlines():
        digest, _, name = line.strip().partition("  ")
        if name == hub.filename:
            return digest.lower()
    return None


def resolve_weights(
    name: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    offline: bool | None = None,
    endpoint: str | None = None,
) -> Path:
    """Turn a weights name into a local path, downloading Hub files into the cache when needed.

    Args:
        name: a local path (returned as ``Path(name)``, not checked here), ``hf://ORG/REPO/FILE[@REVISION]`` or an
            alias from :data:`ALIASES`. An existing local path always wins over a Hub interpretation.
        cache_dir: Hub cache directory (default: ``HF_HUB_CACHE``, else huggingface_hub's default).
        offline: read the cache only (default: ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` at call time).
        endpoint: Hub URL (default: ``HF_ENDPOINT``, else https://huggingface.co).

    Returns:
        The local path (inside the Hub cache for Hub names).

    Raises:
        ValueError: a malformed ``hf://`` name, or a downloaded file whose SHA-256 differs from the one recorded in
            the repository's ``SHA256SUMS``.
        FileNotFoundError: the file is not on the Hub / not in the cache (offline).
        ImportError: ``huggingface_hub`` is not installed (extra ``hub``).
    """
    if not isinstance(name, str) or Path(name).exists():
        return Path(name)
    hub = parse_hub_name(name)
    if hub is None:
        return Path(name)
    cache = _cache_dir(cache_dir)
    off = _offline() if offline is None else offline
    endpoint = _endpoint(endpoint)
    path = _download(hub, hub.filename, cache_dir=cache, offline=off, endpoint=endpoint)
    want = _expected_sha256(hub, cache_dir=cache, offline=off, endpoint=endpoint)
    if want is not None:
        got = file_sha256(path)
        if got != want:
            raise ValueError(
                f"{hub}: the downloaded file {path} has SHA-256 {got[:16]}..., but the repository's {SUMS_FILE} "
                f"records {want[:16]}...; delete it from the cache and download it again"
            )
    return path


# -- publishing ---------------------------------------------------------------------------------------------
def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(os.fspath(path), framework="pt") as f:
        return dict(f.metadata() or {})


def model_card(
    metadata: Mapping[str, str],
    *,
    repo_id: str,
    training_data: str | None = None,
    metrics: Mapping[str, Any] | None = None,
    license: str = "apache-2.0",
) -> str:
    """The ``README.md`` of a published checkpoint (Hub model card with YAML front matter).

    Args:
        metadata: the checkpoint's safetensors metadata (``model_config``, ``contents``, ``encoder_name``, ...).
        repo_id: the repository, for the usage snippet.
        training_data: free text describing the training data (e.g. the filtered mixture and its lists).
        metrics: the evaluation's ``metrics.json`` content, if any.
        license: SPDX-style licence id of the weights (front matter and text).
    """
    config = json.loads(metadata.get("model_config", "{}"))
    contents = metadata.get("contents", "?")
    enc = metadata.get("encoder_name", config.get("encoder", "?"))
    lines = [
        "---",
        f"license: {license}",
        "library_name: anydepth",
        "pipeline_tag: depth-estimation",
        "tags:",
        "- depth-estimation",
        "- monocular-depth",
        "- anydepth",
        "---",
        "",
        f"# {repo_id.split('/')[-1]}",
        "",
        f"An [anydepth](https://github.com/AIGeeksGroup/AnyDepth) model: `{config.get('decoder', '?')}` decoder on a "
        f"`{enc}` encoder; it predicts affine-invariant disparity from RGB in [0, 1].",
        "",
        "## Usage",
        "",
        "```python",
        "import anydepth",
        f'model = anydepth.load_model("hf://{repo_id}/{CHECKPOINT_FILE}"'
        + (', encoder_weights="ENCODER_WEIGHTS")' if contents == "decoder" else ")"),
        "```",
        "",
        "## Checkpoint",
        "",
        f"- file: `{CHECKPOINT_FILE}` (safetensors, format `{metadata.get('format', '?')}`), contents: `{contents}`",
    ]
    if contents == "decoder":
        lines.append(
            f"- decoder only: load it with the `{enc}` weights whose SHA-256 (of the tensors) is "
            f"`{metadata.get('encoder_sha256', '?')}` (checked on load)"
        )
    lines += [
        f"- anydepth version: {metadata.get('anydepth_version', '?')}",
        "",
        "## Configuration",
        "",
        "```json",
        json_text(config, indent=2, sort_keys=True),
        "```",
        "",
        "## Training data",
        "",
        training_data or "Not stated by the uploader.",
        "",
        "## Metrics",
        "",
    ]
    if metrics:
        lines += [
            "```json",
            json_text(metrics, nonfinite="null", indent=2, sort_keys=True),
            "```",
            "",
            "(also in `metrics.json`)",
        ]
    else:
        lines.append("No evaluation was uploaded with this checkpoint.")
    lines += [
        "",
        "## Licence",
        "",
        f"The weights are released under `{license}`. Encoder weights keep their own licence (DINOv3 licence, "
        "DINOv2 Apache-2.0, Depth Anything licences); a decoder-only checkpoint does not contain them.",
        "",
    ]
    return "\n".join(lines)


def push_checkpoint(
    checkpoint: str | os.PathLike[str],
    repo_id: str,
    *,
    training_data: str | None = None,
    metrics: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    license: str = "apache-2.0",
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
) -> str:
    """Upload a project checkpoint with its model card to the Hub repository ``repo_id`` (created if needed).

    The commit holds ``model.safetensors`` (the checkpoint, byte for byte), ``README.md`` (:func:`model_card`),
    ``metrics.json`` when ``metrics`` is given and ``SHA256SUMS`` of those files.

    Args:
        checkpoint: a ``.safetensors`` checkpoint written by ``anydepth.save_model``.
        repo_id: ``ORG/REPO``.
        training_data: text for the card's "Training data" section.
        metrics: a ``metrics.json`` file (as written by ``anydepth eval``) or its parsed content.
        license: licence of the weights.
        private: create the repository as private.
        revision: branch to commit to (default ``main``).
        commit_message: default ``"Upload anydepth model"``.
        token: Hub token (default: huggingface_hub's login / ``HF_TOKEN``).
        endpoint: Hub URL (default: ``HF_ENDPOINT``, else https://huggingface.co).

    Returns:
        The URL of the commit.

    Raises:
        FileNotFoundError: ``checkpoint`` or the metrics file does not exist.
        ValueError: ``checkpoint`` is not a project safetensors checkpoint or ``repo_id`` is malformed.
    """
    src = Path(checkpoint)
    if not src.is_file():
        raise FileNotFoundError(f"checkpoint not found: {src}")
    if parse_hub_name(f"{PREFIX}{repo_id}/x") is None or repo_id.count("/") != 1:
        raise ValueError(f"repo_id must be ORG/REPO, got {repo_id!r}")
    try:
        meta = _metadata(src)
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise ValueError(f"{src}: not a readable safetensors checkpoint ({e})") from e
    if not meta.get("format", "").startswith("anydepth.model."):
        raise ValueError(
            f"{src}: not an anydepth checkpoint (convert it first: anydepth convert {src} out.safetensors)"
        )
    metrics_data: Mapping[str, Any] | None
    if metrics is None or isinstance(metrics, Mapping):
        metrics_data = metrics
    else:
        mp = Path(metrics)
        if not mp.is_file():
            raise FileNotFoundError(f"metrics file not found: {mp}")
        try:
            metrics_data = json.loads(mp.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{mp}: not valid JSON ({e})") from e
    hf = require("huggingface_hub", "anydepth push")
    api = hf.HfApi(endpoint=_endpoint(endpoint), token=token)
    with tempfile.TemporaryDirectory(prefix="anydepth-push-") as tmp:
        stage = Path(tmp)
        try:
            os.link(src, stage / CHECKPOINT_FILE)  # no copy of a large file when on the same file system
        except OSError:
            shutil.copyfile(src, stage / CHECKPOINT_FILE)
        card = model_card(
            meta, repo_id=repo_id, training_data=training_data, metrics=metrics_data, license=license
        )
        (stage / "README.md").write_text(card, encoding="utf-8")
        if metrics_data is not None:
            (stage / "metrics.json").write_text(
                json_text(metrics_data, nonfinite="null", indent=2, sort_keys=True) + "\n", "utf-8"
            )
        sums = "".join(f"{file_sha256(f)}  {f.name}\n" for f in sorted(stage.iterdir()))
        (stage / SUMS_FILE).write_text(sums, encoding="utf-8")
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=os.fspath(stage),
            repo_type="model",
            revision=revision,
            commit_message=commit_message or "Upload anydepth model",
        )
    return str(getattr(info, "commit_url", info))
