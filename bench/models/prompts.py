"""Text prompts of the text-to-image datasets: which caption each seed is conditioned on.

Evaluation sample n uses seed n and caption n of MS-COCO val2014's 30k captions (the CSV the
reference toolbox uses). PAS's teacher trajectories must not see the evaluation captions, so
they draw from a separate pool: the last ``TEACHER_POOL`` captions of the file, which a run of
up to ``len(captions) - TEACHER_POOL`` samples (29,000 of the 30,000) never uses. Each teacher
seed picks one caption of the pool at random from its own generator, exactly as pas draws class
labels for class-conditional models (``solvers.latents_for_seeds``), so the denoiser the teacher
sees is simply a class-conditional model whose classes are the pool's captions.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from bench.downloads import cached_path, fetch, is_url
from bench.errors import UserError

# The text-to-image benchmark release that ships the captions (and ms_coco's FID statistics).
BENCHMARK_RELEASE_URL = ("https://github.com/boomb0om/text2image-benchmark/releases/download/"
                         "v0.0.1/")
COCO_CAPTIONS_URL = BENCHMARK_RELEASE_URL + "MS-COCO_val2014_30k_captions.csv"
CAPTION_COLUMN = "caption"
TEACHER_POOL = 1000


@dataclass(frozen=True)
class PromptTable:
    """The prompts a conditional denoiser can be asked for, by index (its "classes").

    ``single`` marks a table of one prompt used for every seed (``--prompt``).
    """

    prompts: tuple[str, ...]
    source: str
    single: bool = False

    def __len__(self) -> int:
        return len(self.prompts)

    def index_for_seed(self, seed: int) -> int:
        """Caption n for evaluation seed n (every seed gets prompt 0 of a single-prompt table)."""
        if self.single:
            return 0
        if not 0 <= seed < len(self.prompts):
            raise UserError(f"seed {seed} has no caption: {self.source} holds "
                            f"{len(self.prompts):,} captions")
        return seed

    def teacher_pool(self) -> PromptTable:
        """The captions PAS's teacher trajectories use: the last TEACHER_POOL of the file."""
        if self.single:
            return self
        if len(self.prompts) <= TEACHER_POOL:
            raise UserError(f"{self.source} holds {len(self.prompts):,} captions; PAS needs more "
                            f"than {TEACHER_POOL:,} (the last {TEACHER_POOL:,} feed its teacher)")
        return PromptTable(self.prompts[-TEACHER_POOL:], f"{self.source}[-{TEACHER_POOL}:]")

    def check_evaluation(self, num_samples: int, with_pas: bool) -> None:
        """``UserError`` unless ``num_samples`` seeds have their own captions (disjoint from the
        teacher pool when PAS runs)."""
        if self.single:
            return
        usable = len(self.prompts) - (TEACHER_POOL if with_pas else 0)
        if num_samples > usable:
            pool = f" (the last {TEACHER_POOL:,} are PAS's teacher captions)" if with_pas else ""
            raise UserError(f"{num_samples:,} samples need as many captions, but {self.source} "
                            f"has {usable:,} for evaluation{pool}")


def single_prompt(text: str) -> PromptTable:
    """One prompt for all seeds (``--prompt``, a quick look)."""
    if not text.strip():
        raise UserError("--prompt must not be empty")
    return PromptTable((text,), "--prompt", single=True)


def read_captions(path: Path | str) -> PromptTable:
    """The ``caption`` column of a CSV file, in file order."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            column = next((name for name in reader.fieldnames or ()
                           if name.strip().lower() == CAPTION_COLUMN), None)
            if column is None:
                raise UserError(f"{path} has no '{CAPTION_COLUMN}' column "
                                f"(columns: {', '.join(reader.fieldnames or ())})")
            prompts = tuple(row[column] or "" for row in reader)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise UserError(f"cannot read captions {path}: {err}") from None
    if not prompts:
        raise UserError(f"{path} holds no captions")
    return PromptTable(prompts, path.name)


def captions_path(source: str, cache_dir: Path | str | None = None) -> Path:
    """The local file of a captions source: a path as is, a URL downloaded into the cache."""
    if is_url(source):
        return fetch(source, cached_path(source, cache_dir))
    path = Path(source)
    if not path.is_file():
        raise UserError(f"captions file not found: {path}")
    return path
