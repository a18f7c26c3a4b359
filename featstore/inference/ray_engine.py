"""The ray engine: reading, hashing, decoding and inference in Ray actors, one per GPU or CPU slot.

For `score`, actors send back each image's digest and outputs and the driver writes them through
the same parts as the local engine. For `extract`, the work goes in waves: actors compute, and
write tasks (`ShardSink`, a Ray Data datasink) write the features straight into the feature
set's folder as shards and return only their metadata; the driver commits a version after each
wave and never holds feature bytes. Every node needs featstore and must see the images and the
store at the same paths (a shared filesystem).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featstore.data.decode import LoadedImage, load_images
from featstore.data.scan import ImageItem
from featstore.deps import require
from featstore.errors import DeviceError, FeatstoreError


def _ray():
    ray = require("ray", extra="ray", package="ray[data]")
    require("ray.data", extra="ray", package="ray[data]")
    return ray


def _no_restarts() -> dict:
    """Actors are not restarted: a failure stops the job (the next run resumes from its parts)."""
    return {"max_restarts": 0}


@dataclass(frozen=True)
class RunSpec:
    """How an actor runs one network: the `runtime` asked for (auto resolves on the actor's own
    device), the model's `precision`, and the variant's `settings` for that runtime."""

    runtime: str = "onnxruntime"
    precision: str = "fp32"
    settings: dict | None = None

    @classmethod
    def of(cls, variant, runtime: str) -> RunSpec:
        """The spec of a model variant (or a scoring stage) in a run that asked for `runtime`: the
        variant's own runtime when it has one."""
        own = getattr(variant, "runtime", "any")
        return cls(
            runtime if own == "any" else own, variant.precision, getattr(variant, "settings", None) or None
        )


class ImageScorer:
    """The callable class of `map_batches`: one session per network, opened once.

    A batch holds `i` and `path`; the result adds `digest`, `error` and, per network s,
    `out<s>` (n, n_outputs) float32 and `has<s>` (rows computed; a digest the store has is
    hashed, not decoded).
    """

    def __init__(
        self, models, known, n_outputs, size_px: int, resize: str, device: str, n_threads: int, specs=None
    ):
        import ray

        from featstore.inference.runtimes import resolve

        self.models = ray.get(models[0])
        self.known = ray.get(known[0])
        self.n_outputs = n_outputs
        self.size_px, self.resize = size_px, resize
        self.sessions = []
        for m, spec in zip(self.models, specs or [RunSpec()] * len(self.models), strict=True):
            dev, runtime = resolve(device, spec.runtime, spec.precision)
            self.sessions.append(
                runtime.open(m, dev, n_threads, precision=spec.precision, settings=spec.settings)
            )

    def _is_known(self, item: ImageItem, digest: str) -> bool:
        return all(digest in k for k in self.known)

    def __call__(self, batch: dict) -> dict:
        items = [ImageItem(Path(str(p)), str(p), -1) for p in batch["path"]]
        passed = {k: np.asarray(batch[k]) for k in ("rel", "label", "split") if k in batch}
        loaded = list(
            load_images(
                items,
                size_px=self.size_px,
                resize=self.resize,
                n_workers=1,
                is_known=self._is_known,
                max_ahead=max(1, len(items)),
            )
        )
        out = {
            **passed,
            "i": np.asarray(batch["i"]),
            "digest": np.array([lo.digest or "" for lo in loaded], dtype=object),
            "error": np.array([lo.error or "" for lo in loaded], dtype=object),
        }
        for s, (session, known, width) in enumerate(
            zip(self.sessions, self.known, self.n_outputs, strict=True)
        ):
            todo = [j for j, lo in enumerate(loaded) if lo.pixels is not None and lo.digest not in known]
            feats = np.zeros((len(loaded), width), np.float32)
            has = np.zeros(len(loaded), bool)
            if todo:
                feats[todo] = session.run(np.stack([loaded[j].pixels for j in todo]))
                has[todo] = True
            out[f"out{s}"] = feats
            out[f"has{s}"] = has
        return out


class RayEngine:
    """Runs a job's images through a Ray cluster: `address` ("auto", "ray://host:10001"; None: a
    local cluster for the job), `n_workers` actors (default one per GPU, else per CPU)."""

    def __init__(
        self,
        address: str | None = None,
        *,
        n_workers: int | None = None,
        device: str = "auto",
        batch_size: int = 32,
    ):
        self.address = address
        self.n_workers = n_workers
        self.device = device
        self.batch_size = batch_size
        self.description = "ray"
        self._started = False

    def start(self):
        """Join or start the cluster and decide the actors; return the `ray` module."""
        ray = _ray()
        if not ray.is_initialized():
            try:
                ray.init(
                    address=self.address,
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level=logging.WARNING,
                )
            except Exception as err:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ...
                where = self.address or "a new local cluster"
                raise FeatstoreError(f"cannot start Ray ({where}): {str(err).splitlines()[0]}") from err
            self._started = True
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        resources = ray.cluster_resources()
        n_gpu, n_cpu = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
        if self.device in ("cuda", "tensorrt") and n_gpu == 0:
            raise DeviceError(
                f"--device {self.device} asked for, but the Ray cluster has no GPU "
                f"({n_cpu} CPUs); use --device cpu or auto"
            )
        self.gpu = self.device in ("cuda", "tensorrt") or (self.device == "auto" and n_gpu > 0)
        slots = n_gpu if self.gpu else n_cpu
        self.n_actors = max(1, self.n_workers or slots)
        self.description = f"ray ({self.n_actors} {'GPU' if self.gpu else 'CPU'} actors)"
        return ray

    def stop(self) -> None:
        """Stop the local cluster this engine started (a joined cluster keeps running)."""
        if self._started:
            import ray

            ray.shutdown()
            self._started = False

    def load(
        self,
        items: list[ImageItem],
        size_px: int,
        resize: str,
        models: list[bytes],
        known: list[frozenset],
        n_outputs: list[int],
        specs: list[RunSpec] | None = None,
    ) -> Iterator[LoadedImage]:
        """Yield one LoadedImage per item, in order; `pixels` is a tuple of each network's
        (n_outputs,) float32 output (None where the store had it), or None when every network
        had it. `specs` say how each network runs (default ONNX Runtime, fp32)."""
        ray = self.start()
        try:
            yield from self._load(ray, items, size_px, resize, models, known, n_outputs, specs)
        finally:
            self.stop()

    def _load(self, ray, items, size_px, resize, models, known, n_outputs, specs):
        mapped = self._mapped(ray, items, size_px, resize, models, known, n_outputs, specs)
        waiting: dict[int, LoadedImage] = {}
        next_i = 0
        try:
            for batch in mapped.iter_batches(batch_size=None, batch_format="numpy"):
                for j, i in enumerate(batch["i"].tolist()):
                    waiting[i] = self._loaded(items[i], batch, j, len(n_outputs))
                while next_i in waiting:
                    yield waiting.pop(next_i)
                    next_i += 1
        except FeatstoreError:
            raise
        except Exception as err:  # noqa: BLE001 - a failure in an actor arrives as a Ray error
            raise _ray_failure(err, "") from err
        if next_i != len(items):
            raise FeatstoreError(f"the Ray engine returned {next_i} of {len(items)} images")

    def _mapped(self, ray, items, size_px, resize, models, known, n_outputs, specs, with_rows=False):
        """The Ray Data pipeline: item paths in blocks, mapped by an actor pool of ImageScorers
        (`with_rows`: each row also carries the item's rel, label and split)."""
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = False
        rows = [{"i": i, "path": str(item.path)} for i, item in enumerate(items)]
        if with_rows:
            for r, item in zip(rows, items, strict=True):
                r.update(rel=item.rel, label=item.label, split=item.split)
        n_blocks = min(
            len(rows), max(self.n_actors, min(math.ceil(len(rows) / self.batch_size), 20 * self.n_actors))
        )
        ds = ray.data.from_items(rows, override_num_blocks=n_blocks)
        resources = {"num_gpus": 1, "num_cpus": 1} if self.gpu else {"num_cpus": 1}
        kwargs = {
            "batch_size": self.batch_size,
            "batch_format": "numpy",
            "compute": ray.data.ActorPoolStrategy(size=min(self.n_actors, n_blocks)),
            "fn_constructor_kwargs": {
                "models": [ray.put(models)],
                "known": [ray.put(known)],
                "n_outputs": list(n_outputs),
                "size_px": size_px,
                "resize": resize,
                "device": self.device,
                "n_threads": 1,
                "specs": specs,
            },
            **resources,
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # ray_remote_args_fn, until Ray 2.64
            try:
                return ds.map_batches(ImageScorer, ray_remote_args_fn=_no_restarts, **kwargs)
            except TypeError:  # a Ray without it: actors restart after a failure, as Ray Data's default
                return ds.map_batches(ImageScorer, **kwargs)

    @staticmethod
    def _loaded(item: ImageItem, batch: dict, j: int, n_stages: int) -> LoadedImage:
        digest = str(batch["digest"][j]) or None
        error = str(batch["error"][j]) or None
        if error:
            return LoadedImage(item, digest, None, error)
        outs = tuple(batch[f"out{s}"][j] if batch[f"has{s}"][j] else None for s in range(n_stages))
        return LoadedImage(item, digest, outs if any(o is not None for o in outs) else None)

    def write_wave(self, items: list[ImageItem], size_px: int, resize: str, model: bytes, known: frozenset,
                   n_outputs: int, spec: RunSpec, sink: ShardSink) -> tuple[list[tuple], list[dict]]:  # fmt: skip
        """Run one wave: the actors compute the images not `known`, `sink`'s write tasks write them
        as shards. Returns ((digest, error) per item, in order; the shards' metadata)."""
        ray = self.start()
        mapped = self._mapped(
            ray, items, size_px, resize, [model], [known], [n_outputs], [spec], with_rows=True
        )
        sink.min_rows = max(1, len(items) // self.n_actors)
        try:
            mapped.write_datasink(sink)
        except FeatstoreError:
            raise
        except Exception as err:  # noqa: BLE001 - a failure in an actor or write task arrives as a Ray error
            after = "; the waves committed before are kept, and the next run goes on from them"
            raise _ray_failure(err, after) from err
        seen: dict[int, tuple] = {}
        shards = []
        for result in sink.results:
            seen.update(result["seen"])
            shards.extend(result["shards"])
        if len(seen) != len(items):
            raise FeatstoreError(f"the Ray engine returned {len(seen)} of {len(items)} images")
        return [seen[i] for i in range(len(items))], shards


def _ray_failure(err: Exception, after: str) -> FeatstoreError:
    """The error to raise for a failure Ray reports: featstore's own when an actor raised one,
    else one line naming Ray's last line, then `after`."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, FeatstoreError):
        return type(cause)(str(cause))
    return FeatstoreError(f"the Ray engine failed: {str(err).strip().splitlines()[-1]}{after}")


def _shard_sink_base():
    from ray.data import Datasink

    return Datasink


class ShardSink:
    """Ray Data datasink of `extract --engine ray`: each write task writes the rows its actors
    computed as one shard of the feature set's `folder` (temporary name, fsync, rename) and
    returns its metadata, the rows' (path, label, split, digest) and each image's (digest,
    error); no feature byte goes back to the driver. Made a `ray.data.Datasink` by `make`."""

    def __init__(self, folder: str, prefix: str, n_features: int, dtype: str):
        self.folder, self.prefix, self.n_features, self.dtype = folder, prefix, n_features, dtype
        self.results: list[dict] = []
        self.min_rows = 1

    @classmethod
    def make(cls, folder: str, prefix: str, n_features: int, dtype: str) -> ShardSink:
        """A ShardSink that is a `ray.data.Datasink` (Ray imported only here)."""
        sink_type = type("ShardDatasink", (cls, _shard_sink_base()), {})
        return sink_type(folder, prefix, n_features, dtype)

    @property
    def min_rows_per_write(self) -> int:
        return self.min_rows

    def write(self, blocks, ctx) -> dict:
        """Write the computed rows of `blocks` as one shard (in a Ray write task)."""
        from ray.data.block import BlockAccessor

        from featstore.store.commits import write_shard
        from featstore.store.featuresets import FeatureRows

        cols: dict[str, list] = {}
        for block in blocks:
            for k, v in BlockAccessor.for_block(block).to_numpy().items():
                cols.setdefault(k, []).append(np.asarray(v))
        if not cols:
            return {"seen": {}, "shards": []}
        c = {k: np.concatenate(v) for k, v in cols.items()}
        seen = {
            int(i): (str(d) or None, str(e) or None)
            for i, d, e in zip(c["i"], c["digest"], c["error"], strict=True)
        }
        done = np.flatnonzero(c["has0"].astype(bool))
        shards = []
        if len(done):
            rows = FeatureRows(
                paths=[str(c["rel"][j]) for j in done],
                labels=c["label"][done].astype(np.int32),
                digests=[str(c["digest"][j]) for j in done],
                split=[str(c["split"][j]) for j in done],
            )
            feats = np.asarray(c["out0"][done], dtype=self.dtype)
            name = f"{self.prefix}{ctx.task_idx:04d}.h5"
            entry = write_shard(
                Path(self.folder), name, rows, lambda a, b: feats[a:b], self.n_features, self.dtype
            )
            shards.append({"entry": entry, "paths": rows.paths, "labels": rows.labels.tolist(),
                           "digests": rows.digests, "split": rows.split})  # fmt: skip
        return {"seen": seen, "shards": shards}

    def on_write_complete(self, write_result) -> None:
        """Keep what every write task returned (on the driver)."""
        self.results = list(getattr(write_result, "write_returns", write_result))


@dataclass
class _PassThrough:
    """Stands in for the session of `extract`: the actors computed the features already."""

    device: str
    runtime: str | None = None
    transfer_s: float = 0.0  # the stage times `--profile` reads: spent in the actors, not here
    inference_s: float = 0.0

    def run(self, features: np.ndarray) -> np.ndarray:
        """(N, D) features -> the same, float32."""
        return np.asarray(features, dtype=np.float32)


class ExtractEngine:
    """The hook `extract` uses with `--engine ray`: `engine` (a RayEngine) runs its waves
    (`extraction.waves`), `open` stands in for its session."""

    def __init__(
        self, address: str | None, n_workers: int | None, device: str, batch_size: int, runtime: str = "auto"
    ):
        self.engine = RayEngine(address, n_workers=n_workers, device=device, batch_size=batch_size)
        self.runtime = runtime

    def open(self, job) -> _PassThrough:
        """The session `extract` runs its batches through."""
        return _PassThrough(self.engine.description, RunSpec.of(job.variant, self.runtime).runtime)
