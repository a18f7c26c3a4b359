"""Per-stage timing of one extract run (`--profile`) and which stage held it back."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class StageTimes:
    """Seconds spent per stage of an extract run.

    `read_s` and `decode_s` are summed over the decode threads (they can exceed the wall
    time); `wait_s` (waiting for decoded images), `transfer_s`, `inference_s` and `write_s` are
    the main thread's. `wall_s` is the loop without `setup_s`; `runtime` what ran the backbone
    (None under the Ray engine).
    """

    n_images: int = 0
    n_workers: int = 1
    device: str = "cpu"
    runtime: str | None = None
    wall_s: float = 0.0
    setup_s: float = 0.0
    read_s: float = 0.0
    decode_s: float = 0.0
    wait_s: float = 0.0
    transfer_s: float = 0.0
    inference_s: float = 0.0
    write_s: float = 0.0

    def to_dict(self) -> dict:
        """Return a JSON-ready dict, seconds rounded to the millisecond, plus the table rows."""
        d = {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}
        d["stages"] = self.rows()
        d["bottleneck"] = self.bottleneck()
        return d

    def bottleneck(self) -> dict:
        """The stage the main thread spent most of the loop in (`decode`, `inference`, `transfer`,
        `write` or `other`), its share of the wall time and what would help."""
        wall = self.wall_s or 1e-9
        spent = {
            "decode": self.wait_s,
            "inference": self.inference_s,
            "transfer": self.transfer_s,
            "write": self.write_s,
            "other": max(0.0, self.wall_s - self.wait_s - self.inference_s - self.transfer_s - self.write_s),
        }
        stage = max(spent, key=spent.get)
        hint = {
            "decode": f"the {self.n_workers} decode threads did not keep up with inference: more cores "
            "(--workers), the simplejpeg decoder, or a smaller input would help",
            "inference": "the backbone: a faster precision (int8, bf16) or runtime would help",
            "transfer": "copying batches to the GPU",
            "write": "writing part files: a faster disk would help",
            "other": "the main thread's own work (batching, bookkeeping)",
        }[stage]
        return {"stage": stage, "share_of_wall": round(spent[stage] / wall, 3), "why": hint}

    def rows(self) -> list[dict]:
        """One row per stage: seconds, milliseconds per computed image, share of the wall time."""
        n, wall = max(self.n_images, 1), self.wall_s or 1e-9
        threads = f"{self.n_workers} decode threads"
        stages = [
            ("read + hash", self.read_s, threads),
            ("decode + resize", self.decode_s, threads),
            ("wait for decode", self.wait_s, "main thread"),
            *([("transfer to GPU", self.transfer_s, "main thread")] if self.device != "cpu" else []),
            ("inference", self.inference_s, "main thread"),
            ("write", self.write_s, "main thread"),
        ]
        main = self.wait_s + self.transfer_s + self.inference_s + self.write_s
        stages.append(("other", max(0.0, self.wall_s - main), "main thread"))
        return [
            {
                "stage": name,
                "seconds": round(s, 3),
                "ms_per_image": round(1000 * s / n, 3),
                "share_of_wall": round(s / wall, 3),
                "where": where,
            }
            for name, s, where in stages
        ]
