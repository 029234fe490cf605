"""python -m report on a synthetic store: table contents, LaTeX sanity, figures, index links, errors."""
from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from store_factory import NFES, build_store, make_row, write_rows

import report.__main__ as cli
from report.tables import format_value, metric_table, to_markdown, with_labels

METHODS = ["DDIM", "DDIM + PAS", "iPNDM", "iPNDM + PAS", "my_solver", "my_solver + PAS"]
FIGURES = {
    "gmm2d": ("metric_vs_nfe", "quality_vs_time", "pas_steps", "trajectories"),
    "digits": ("metric_vs_nfe", "quality_vs_time", "pas_steps", "samples"),
}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report of the fixture store, with a newer run that replaces one cell's value."""
    store = tmp_path_factory.mktemp("store")
    build_store(store)
    newer = make_row("gmm2d", "ddim", 6, False, value=4.5, run_id="run-b", created_at="2025-03-02T12:00:00+00:00",
                     timing_suspect=True, timing_suspect_reason="load average 3.00 > 2 (cores)")
    older = make_row("gmm2d", "ddim", 10, False, value=99.0, run_id="run-0", created_at="2025-02-01T00:00:00+00:00")
    write_rows(store / "run-b.jsonl", [newer])
    write_rows(store / "run-0.jsonl", [older])
    out = tmp_path_factory.mktemp("out")
    assert cli.main([str(store), "--out", str(out)]) == 0
    return out


def markdown_rows(path: Path) -> list[list[str]]:
    """Cells of a Markdown table, separator line dropped."""
    lines = [line for line in path.read_text().splitlines() if line.startswith("|")]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    return [rows[0], *rows[2:]]


def test_metric_table_rows_columns_values_and_bold(built: Path) -> None:
    header, *rows = markdown_rows(built / "tables" / "gmm2d_fd.md")
    assert header == ["Method \\ NFE", "4", "6", "10", "PAS params"]
    assert [row[0] for row in rows] == METHODS
    table = {row[0]: row[1:] for row in rows}
    # base = scale * 10 / nfe; PAS = factor * base (store_factory); run-b's newer 4.5 replaces DDIM@6,
    # the older run-0 row (99.0) does not replace DDIM@10.
    assert table["DDIM"] == ["7.50", "4.50", "3.00", ""]
    assert table["DDIM + PAS"] == ["**3.75**", "**2.50**", "**1.50**", "8-12"]
    assert table["iPNDM + PAS"] == ["4.00", "2.67", "1.60", "8-12"]
    assert table["my_solver"] == ["6.25", "4.17", "2.50", ""]
    assert table["my_solver + PAS"] == ["6.88", "4.58", "2.75", "8-12"]
    bold = [(m, i) for m, cells in table.items() for i, c in enumerate(cells) if c.startswith("**")]
    assert bold == [("DDIM + PAS", 0), ("DDIM + PAS", 1), ("DDIM + PAS", 2)]


def test_gain_and_time_tables(built: Path) -> None:
    header, *rows = markdown_rows(built / "tables" / "gmm2d_pas_gain.md")
    assert header[1:] == [str(n) for n in NFES]
    gains = {row[0]: row[1:] for row in rows}
    assert gains["DDIM + PAS"] == ["+50.0%", "+44.4%", "+50.0%"]  # 1 - 2.5 / 4.5 at NFE 6
    assert gains["iPNDM + PAS"] == ["+20.0%"] * 3
    assert gains["my_solver + PAS"] == ["-10.0%"] * 3
    _, *rows = markdown_rows(built / "tables" / "digits_time.md")
    assert rows[0] == ["DDIM", "0.0400", "0.0600", "0.100"]  # s_per_sample = nfe * 1e-5, in ms
    # The newer gmm2d row was timed on a busy machine; rows without the field are not suspect.
    _, *rows = markdown_rows(built / "tables" / "gmm2d_time.md")
    assert rows[0] == ["DDIM", "0.0400", "0.0600\u2020", "0.100"]
    assert all("\u2020" not in cell for row in rows[1:] for cell in row)


def test_settings_table(built: Path) -> None:
    header, *rows = markdown_rows(built / "tables" / "digits_settings.md")
    assert header == ["Setting", "DDIM", "iPNDM", "my_solver"]
    settings = {row[0]: row[1:] for row in rows}
    # No precision row: FD rows are the analytic datasets, which have no network to run in it.
    assert list(settings) == ["schedule", "samples", "seeds", "dtype", "PAS k", "PAS loss"]
    assert settings["seeds"] == ["0-999"] * 3 and settings["PAS loss"] == ["L1"] * 3
    tex = (built / "tables" / "digits_settings.tex").read_text()
    assert "Setting & DDIM & iPNDM & my\\_solver \\\\\n\\midrule" in tex  # one header row


def test_latex_is_balanced_booktabs_and_escaped(built: Path) -> None:
    tex = (built / "tables" / "gmm2d_fd.tex").read_text()
    assert tex.count(r"\begin{tabular}{lrrrr}") == 1 and tex.count(r"\end{tabular}") == 1
    assert [tex.count(rule) for rule in (r"\toprule", r"\midrule", r"\bottomrule")] == [1, 1, 1]
    assert tex.index(r"\toprule") < tex.index(r"\midrule") < tex.index(r"\bottomrule")
    assert r"my\_solver + PAS" in tex and not re.search(r"[^\\]_", tex)
    assert r"\textbf{3.75}" in tex and tex.count(r"\textbf") == 3
    body = tex.split(r"\midrule")[1].split(r"\bottomrule")[0].strip().splitlines()
    assert len(body) == len(METHODS) and all(line.count("&") == 4 for line in body)
    gain = (built / "tables" / "gmm2d_pas_gain.tex").read_text()
    assert r"+50.0\%" in gain


def test_every_figure_written_in_png_and_svg(built: Path) -> None:
    expected = {f"{d}_{kind}.{ext}" for d, kinds in FIGURES.items() for kind in kinds for ext in ("png", "svg")}
    written = {p.name for p in (built / "figures").iterdir()}
    assert written == expected
    for name in expected:
        data = (built / "figures" / name).read_bytes()
        assert data.startswith(b"\x89PNG") if name.endswith(".png") else b"<svg" in data[:2000]
        assert len(data) > 5000


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.links += [v for k, v in attrs if k in ("href", "src") and v and not v.startswith("#")]


def test_index_links_only_existing_files_and_shows_everything(built: Path) -> None:
    page = (built / "index.html").read_text()
    parser = _Links()
    parser.feed(page)
    assert parser.links and all("://" not in link and not link.startswith("/") for link in parser.links)
    assert all((built / link).is_file() for link in parser.links)
    produced = {str(p.relative_to(built)) for p in built.rglob("*") if p.is_file() and p.name != "index.html"}
    assert produced == set(parser.links)
    assert "0123456789" in page and "run-b" in page and "2025-03-02" in page  # provenance


def test_published_numbers_beside_measured(tmp_path: Path) -> None:
    rows = [make_row("cifar10", "ddim", 4, pas, metric="fid") for pas in (False, True)]
    write_rows(tmp_path / "store" / "run.jsonl", rows)
    csv = tmp_path / "published.csv"
    csv.write_text("dataset,solver,pas,nfe,fid,source\ncifar10,ddim,false,4,66.76,paper A\n"
                   "cifar10,ddim,false,5,49.66,paper A\nffhq,ddim,false,4,1.0,paper B\n")
    out = tmp_path / "out"
    assert cli.main([str(tmp_path / "store"), "--out", str(out), "--published", str(csv)]) == 0
    _, *rows = markdown_rows(out / "tables" / "published.md")
    assert rows == [["DDIM", "cifar10", "4", "66.76", "7.50", "-59.26", "paper A"]]
    assert 'href="tables/published.md"' in (out / "index.html").read_text()


def test_missing_default_published_file_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_rows(tmp_path / "store" / "run.jsonl", [make_row("cifar10", "ddim", 4, False, metric="fid")])
    monkeypatch.setattr(cli, "PUBLISHED_CSV", tmp_path / "absent.csv")
    assert cli.main([str(tmp_path / "store"), "--out", str(tmp_path / "out")]) == 0
    assert not (tmp_path / "out" / "tables" / "published.md").exists()


@pytest.mark.parametrize("extra", [["MISSING"], ["STORE", "--metric", "kid"], ["EMPTY"],
                                   ["STORE", "--datasets", "ffhq"], ["STORE", "--bogus"]])
def test_bad_input_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str]) -> None:
    write_rows(tmp_path / "store" / "run.jsonl", [make_row("gmm2d", "ddim", 4, False)])
    (tmp_path / "empty").mkdir()
    paths = {"MISSING": tmp_path / "nope", "STORE": tmp_path / "store", "EMPTY": tmp_path / "empty"}
    argv = [str(paths.get(arg, arg)) for arg in extra] + ["--out", str(tmp_path / "out")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("report: ") and err.count("\n") == 1


def test_format_value_and_tied_bold() -> None:
    assert [format_value(v) for v in (12.3456, 1.0, 0.5, 0.012345, 0.0)] == ["12.35", "1.00", "0.500", "0.0123", "0.00"]
    assert format_value(float("nan")) == ""
    cells = pd.DataFrame([make_row("gmm2d", s, 4, False, value=v) for s, v in (("ddim", 2.004), ("ipndm", 1.996))])
    cells["created_at"] = pd.to_datetime(cells["created_at"])
    lines = to_markdown(metric_table(with_labels(cells))).splitlines()
    assert "**2.00**" in lines[2] and "**2.00**" in lines[3]  # equal as shown -> both bold


def test_text_to_image_rows_get_a_clip_table_and_their_guidance(tmp_path: Path) -> None:
    conditioning = {"guidance": 7.5, "prompt": None, "captions": "captions.csv"}
    rows = [make_row("ms_coco", solver, nfe, pas, metric="fid", preview=None, unet_evals=2 * nfe,
                     conditioning=conditioning, clip_score=30.0 + nfe + (1.0 if pas else 0.0))
            for solver in ("ddim", "ipndm") for nfe in NFES for pas in (False, True)]
    write_rows(tmp_path / "store" / "run.jsonl", rows)
    out = tmp_path / "out"
    assert cli.main([str(tmp_path / "store"), "--out", str(out)]) == 0
    header, *lines = markdown_rows(out / "tables" / "ms_coco_clip_score.md")
    assert header == ["Method \\ NFE", "4", "6", "10", "PAS params"]
    table = {line[0]: line[1:4] for line in lines}
    assert table["DDIM"] == ["34.00", "36.00", "40.00"]
    assert table["DDIM + PAS"] == ["**35.00**", "**37.00**", "**41.00**"]  # higher is better
    assert table["iPNDM + PAS"] == ["**35.00**", "**37.00**", "**41.00**"]
    settings = {line[0]: line[1:] for line in markdown_rows(out / "tables" / "ms_coco_settings.md")}
    assert settings["guidance"] == ["7.5", "7.5"] and settings["prompts"] == ["captions.csv"] * 2
    assert settings["UNet evals"][0].startswith("2 x NFE")
