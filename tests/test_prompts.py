"""Which caption each seed gets: caption n for evaluation seed n, PAS's teacher on the last
TEACHER_POOL captions, one prompt for all seeds with --prompt, and bad caption files."""
from __future__ import annotations

import pytest

from bench.errors import UserError
from bench.models.prompts import TEACHER_POOL, read_captions, single_prompt


def _csv(path, count, header="image_id,id,caption"):
    lines = [header, *(f'{n},{n + 7},"caption, number {n}"' for n in range(count))]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_caption_n_for_seed_n_and_a_disjoint_teacher_pool(tmp_path):
    table = read_captions(_csv(tmp_path / "c.csv", TEACHER_POOL + 20))
    assert len(table) == TEACHER_POOL + 20 and table.prompts[3] == "caption, number 3"
    assert [table.index_for_seed(n) for n in (0, 5, 19)] == [0, 5, 19]
    pool = table.teacher_pool()
    assert pool.prompts == table.prompts[20:] and len(pool) == TEACHER_POOL
    table.check_evaluation(20, with_pas=True)  # seeds 0..19 use captions 0..19, none of the pool
    table.check_evaluation(TEACHER_POOL + 20, with_pas=False)
    with pytest.raises(UserError, match="21 samples need as many captions.*PAS's teacher"):
        table.check_evaluation(21, with_pas=True)
    with pytest.raises(UserError, match="has no caption"):
        table.index_for_seed(TEACHER_POOL + 20)


def test_one_prompt_serves_every_seed_and_the_teacher():
    table = single_prompt("a red cat")
    assert [table.index_for_seed(n) for n in (0, 10**6)] == [0, 0]
    assert table.teacher_pool() is table
    table.check_evaluation(30_000, with_pas=True)
    with pytest.raises(UserError, match="must not be empty"):
        single_prompt("  ")


@pytest.mark.parametrize("make, message", [
    (lambda p: _csv(p, 3, header="image_id,text"), "no 'caption' column"),
    (lambda p: _csv(p, 0), "holds no captions"),
    (lambda p: p.write_bytes(b"caption\n\xff\xfe\n"), "cannot read captions"),
    (lambda p: None, "cannot read captions"),
])
def test_bad_caption_files_are_user_errors(tmp_path, make, message):
    path = tmp_path / "bad.csv"
    make(path)
    with pytest.raises(UserError, match=message):
        read_captions(path)
    assert not read_captions(_csv(tmp_path / "ok.csv", 2)).single


def test_plan_conditioning_from_grid_and_command_line(tmp_path):
    from bench.grids import load_grid
    from bench.models.prompts import COCO_CAPTIONS_URL
    from bench.plan import Overrides, build_plan

    grid = load_grid("sd")
    (cell, *_) = build_plan(grid)
    assert cell.conditioning == {"guidance": 7.5, "prompt": None, "captions": COCO_CAPTIONS_URL}
    quick = build_plan(grid, Overrides(prompt="a red cat", guidance=3.0, pas="off"))
    assert {c.conditioning["prompt"] for c in quick} == {"a red cat"}
    assert quick[0].conditioning["captions"] is None and quick[0].conditioning["guidance"] == 3.0
    assert quick[0].config_hash != build_plan(grid, Overrides(pas="off"))[0].config_hash
    with pytest.raises(UserError, match="--prompt applies to text-to-image datasets"):
        build_plan(load_grid("smoke"), Overrides(prompt="a red cat"))
    with pytest.raises(UserError, match="exclude each other"):
        build_plan(grid, Overrides(prompt="a", captions=str(_csv(tmp_path / "c.csv", 5))))
