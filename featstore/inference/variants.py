"""The model variants of an export kept in `store/backbones/`: what runs at each precision and
runtime, its digest, its JSON sidecar.

int8 and fp16 are files of their own; a runtime's own variant (OpenVINO's bf16 and int8) is a
sidecar naming the file it runs. fp32 features of every runtime share the export's digest;
every other variant's digest adds what makes it differ, so features of different digests
never mix.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from featstore.files import new_temp, sha256_file, write_atomic
from featstore.store.layout import StoreLayout


@dataclass(frozen=True)
class ModelVariant:
    """The ONNX file a run executes at one precision, how it is run, and what identifies its features.

    `runtime` is the runtime whose features the digest names ("any" for fp32); `settings` tell
    it how to run the file; `check` is the comparison with fp32; `calibration` names the
    dataset, image count and sample digest the int8 ranges came from.
    """

    path: Path
    precision: str
    digest: str
    base_digest: str
    onnx_sha256: str
    settings: dict = field(default_factory=dict)
    calibration: dict | None = None
    check: dict | None = None
    created: str = ""
    seconds: float = 0.0
    onnx_size: int | None = None
    onnx_mtime_ns: int | None = None
    runtime: str = "onnxruntime"

    def to_dict(self) -> dict:
        """Return a JSON-ready dict (the sidecar file's content)."""
        return {**asdict(self), "path": str(self.path)}

    @classmethod
    def from_dict(cls, data: dict) -> ModelVariant:
        """Rebuild from a sidecar dict (keys this version does not know are ignored)."""
        known = set(cls.__dataclass_fields__)
        return cls(**{**{k: v for k, v in data.items() if k in known}, "path": Path(data["path"])})

    def describe(self) -> dict:
        """The attributes a feature set records about the model that computed it."""
        return {
            "precision": self.precision,
            "digest": self.digest,
            "base_digest": self.base_digest,
            "onnx_sha256": self.onnx_sha256,
            "file": self.path.name,
            "runtime": self.runtime,
            "settings": self.settings,
            "calibration": self.calibration,
            "check": self.check,
        }


def fp32_variant(exported) -> ModelVariant:
    """The fp32 variant: the export itself, its digest unchanged, run by either runtime."""
    return ModelVariant(
        exported.path,
        "fp32",
        exported.digest,
        exported.digest,
        exported.onnx_sha256,
        created=exported.created,
        runtime="any",
    )


def _onnxruntime_version() -> str:
    import importlib.metadata as md

    for dist in ("onnxruntime-gpu", "onnxruntime"):
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            continue
    return "absent"


def variant_digest(base_digest: str, precision: str, settings: dict, calibration_digest: str | None) -> str:
    """Hex SHA-256 of what makes a variant file: fp32 digest, precision, settings, calibration
    sample, and the ONNX Runtime version that wrote it."""
    payload = {
        "base": base_digest,
        "precision": precision,
        "settings": settings,
        "calibration": calibration_digest,
        "onnxruntime": _onnxruntime_version(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def derived_digest(runs_digest: str, precision: str, settings: dict) -> str:
    """Hex SHA-256 of a variant that runs another one's file: that variant's digest, the
    precision and the runtime's settings."""
    payload = {"runs": runs_digest, "precision": precision, "settings": settings}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _model_path(layout: StoreLayout, meta: Path, info: ModelVariant) -> Path:
    """The file a sidecar's variant runs: its own `.onnx`, else the file its `path` names."""
    own = meta.with_suffix(".onnx")
    return own if own.is_file() else layout.backbones / info.path.name


def _variants(layout: StoreLayout, base_stem: str, token: str) -> list[ModelVariant]:
    out = []
    for meta in sorted(layout.backbones.glob(f"{base_stem}-{token}-*.json")):
        try:
            info = ModelVariant.from_dict(json.loads(meta.read_text()))
        except (OSError, ValueError, TypeError, KeyError):
            continue
        path = _model_path(layout, meta, info)
        if not path.is_file():
            continue
        st = path.stat()
        if (st.st_size, st.st_mtime_ns) != (info.onnx_size, info.onnx_mtime_ns) and sha256_file(
            path
        ) != info.onnx_sha256:
            continue
        out.append(ModelVariant.from_dict({**info.to_dict(), "path": path}))
    return out


def find_variant(layout: StoreLayout, digest: str) -> ModelVariant | None:
    """Return the stored variant whose digest is `digest` (any precision or runtime), or None."""
    if not layout.backbones.is_dir():
        return None
    for meta in layout.backbones.glob(f"*-*-{digest[:12]}.json"):
        stem, token, _ = meta.stem.rsplit("-", 2)
        for v in _variants(layout, stem, token):
            if v.digest == digest:
                return v
    return None


def latest_variant(layout: StoreLayout, base_stem: str, precision: str) -> ModelVariant | None:
    """Return the most recently made `precision` variant file of the export `base_stem`, or None."""
    found = _variants(layout, base_stem, precision)
    return max(found, key=lambda v: (v.created, v.onnx_mtime_ns or 0)) if found else None


def _sidecar(out: Path, variant: ModelVariant, extra: dict, t0: float) -> ModelVariant:
    """Record `variant` (running file `out`) with `extra` fields in `<out>.json`, atomically."""
    st = out.stat()
    info = {
        **variant.to_dict(),
        **extra,
        "path": out,
        "onnx_sha256": sha256_file(out),
        "onnx_size": st.st_size,
        "onnx_mtime_ns": st.st_mtime_ns,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    return ModelVariant.from_dict(info)


def write_variant(
    layout: StoreLayout, base_stem: str, variant: ModelVariant, make: Callable[[Path], dict | None]
) -> ModelVariant:
    """Make the variant's file with `make(tmp_path)` (which may return fields to record), rename it
    into place, then write its sidecar; both atomic."""
    t0 = time.perf_counter()
    out = layout.backbones / f"{base_stem}-{variant.precision}-{variant.digest[:12]}.onnx"
    tmp = Path(new_temp(out.parent, out.name))
    try:
        extra = make(tmp) or {}
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    variant = _sidecar(out, variant, extra, t0)
    write_atomic(out.with_suffix(".json"), json.dumps(variant.to_dict(), indent=2).encode())
    return variant


def write_derived(
    layout: StoreLayout, base_stem: str, variant: ModelVariant, token: str, check: Callable[[], dict | None]
) -> ModelVariant:
    """Record a variant that runs the file `variant.path` (a runtime's own): its sidecar
    `<base_stem>-<token>-<key>.json`, with `check()`'s result as its check."""
    t0 = time.perf_counter()
    extra = {"check": check()}
    variant = _sidecar(variant.path, variant, extra, t0)
    meta = layout.backbones / f"{base_stem}-{token}-{variant.digest[:12]}.json"
    write_atomic(meta, json.dumps(variant.to_dict(), indent=2).encode())
    return variant
