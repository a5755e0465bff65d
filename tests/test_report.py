"""The report stage on a tiny synthetic metrics tree."""

import csv
import json
import math
import subprocess
import sys

import pandas as pd
import pytest
import torch

from scoresde import report

EXTRACTOR = "scoresde-classifier (trained on digits; not Inception)"
# (sde, sampler, predictor, corrector, steps, denoise, nfe, fid): every paper ordering holds.
CASES = [
    ("ve", "pc", "reverse_diffusion", "langevin", 10, True, 20, 30.0),
    ("ve", "pc", "reverse_diffusion", "langevin", 1000, True, 2000, 5.0),
    ("ve", "pc", "reverse_diffusion", "langevin", 10, False, 20, 35.0),
    ("ve", "p_only", "reverse_diffusion", "none", 10, True, 10, 40.0),
    ("ve", "p_only", "reverse_diffusion", "none", 1000, True, 1000, 6.0),
    ("ve", "c_only", "none", "langevin", 20, True, 20, 90.0),
    ("ve", "ode", "rk45", "none", None, False, 60, 8.0),
    ("vp", "pc", "reverse_diffusion", "langevin", 10, True, 20, 25.0),
    ("vp", "p_only", "euler_maruyama", "none", 10, True, 10, 33.0),
    ("vp", "p_only", "euler_maruyama", "none", 10, False, 10, 36.0),
    ("subvp", "p_only", "euler_maruyama", "none", 10, True, 10, 31.0),
]
BPD = {"ve": 2.9, "vp": 2.6, "subvp": 2.4}
B = 60  # bootstrap replicates per case
# replicates share noise across cases (the common reference resamples and per-sample seeds): a
# wide interval for each FID (about +-3) and a tight one (about +-0.3) for paired differences
_G = torch.Generator().manual_seed(0)
SHARED = torch.randn(B, generator=_G, dtype=torch.float64)


def replicates(fid, own=0.1, shared=1.5, seed=1):
    own_noise = torch.randn(B, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (fid + shared * SHARED + own * own_noise).tolist()
FIGURES = ["fid_vs_steps_digits", "fid_vs_nfe_digits", "tweedie_digits", "samples_digits_ve",
           "samples_digits_vp", "samples_digits_subvp", "loss_digits", "bpd_digits",
           "selection_digits"]  # fmt: skip


def _case_name(c):
    return f"{c[1]}-{c[2]}-{c[3]}-{c[4]}-{int(c[5])}"  # any name: fields come from the JSON


def _write_tree(root, cases=CASES, bpd=BPD, extra=None):
    fid_files, nll_files = [], []
    for i, (sde, sampler, pred, corr, steps, denoise, nfe, fid) in enumerate(cases):
        case = _case_name(cases[i])
        path = root / "metrics" / "digits" / sde / "fid" / f"{case}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({
            "dataset": "digits", "sde": sde, "sampler": sampler, "predictor": pred,
            "corrector": corr, "steps": steps, "denoise": denoise, "nfe": nfe, "seconds": 1.5,
            "n_samples": 64, "fid": fid, "kid": fid / 1000, "kid_std": 0.001,
            "feature_extractor": EXTRACTOR, "fid_bootstrap": replicates(fid, seed=i + 1),
            "bootstrap_n": B, "bootstrap_seed": 0, "n_reference": 100,
            **(extra(cases[i]) if extra else {}),
        }))  # fmt: skip
        fid_files.append(path)
        samples = root / "samples" / "digits" / sde / f"{case}.pt"
        samples.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"images": torch.randint(0, 256, (16, 1, 8, 8), dtype=torch.uint8)}, samples)
    for sde, value in bpd.items():
        path = root / "metrics" / "digits" / sde / "nll.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({
            "dataset": "digits", "sde": sde, "bpd": value, "bpd_sem": 0.05, "nfe": 120,
            "n_images": 32, "divergence": "rademacher", "n_probes": 1, "rtol": 1e-5, "atol": 1e-5,
        }))  # fmt: skip
        nll_files.append(path)
        ckpt = root / "checkpoints" / "digits" / sde
        ckpt.mkdir(parents=True, exist_ok=True)
        log = "step,loss,lr,seconds\n" + "".join(f"{s},{10 / (s + 1)},2e-4,{s / 10}\n"
                                                  for s in range(0, 100, 10))  # fmt: skip
        (ckpt / "train_log.csv").write_text(log)
        (ckpt / "selection.csv").write_text("step,fid,nfe\n50,40.0,20\n100,35.0,20\n150,37.0,20\n")
    return fid_files, nll_files


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("tree")
    fid_files, nll_files = _write_tree(root)
    bench = root / "benchmarks" / "train_digits_ve.tsv"
    bench.parent.mkdir()
    bench.write_text("s\th:m:s\tmax_rss\n12.5\t0:00:12\t300.1\n")
    out = report.build_report(
        fid_files, nll_files, root / "reports", checkpoints_dir=root / "checkpoints",
        samples_dir=root / "samples", config={"train": {"n_iters": 100}, "sample": {"steps": [10]}},
        benchmark_files=[bench, root / "missing.tsv"], repo_dir=root,
    )  # fmt: skip
    return root, out


def _csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_csvs_have_one_row_per_case_and_the_agreed_columns(built):
    root, out = built
    rows = _csv(out["metrics_csv"])
    assert list(rows[0]) == report.FID_COLUMNS
    assert len(rows) == len(CASES)
    ode = next(r for r in rows if r["sampler"] == "ode")
    assert ode["steps"] == "" and ode["nfe"] == "60" and ode["denoise"] == "False"
    assert {r["steps"] for r in rows} >= {"10", "1000"}
    nll = _csv(out["likelihood_csv"])
    assert list(nll[0]) == report.LIKELIHOOD_COLUMNS  # a per-SDE row, then the bound's columns
    assert {r["sde"]: float(r["bpd"]) for r in nll} == BPD


def test_every_figure_is_a_png(built):
    root, out = built
    names = sorted(p.stem for p in out["figures"])
    assert names == sorted(FIGURES)
    for name in FIGURES:
        data = (root / "reports" / "figures" / f"{name}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


def test_expected_figures_are_the_figures_written(built):
    """The workflow declares expected_figures() as the report rule's outputs."""
    _, out = built
    expected = report.expected_figures("digits", ["subvp", "ve", "vp"], tweedie=True)
    assert [name for name, _, _ in expected] == [p.stem for p in out["figures"]]
    assert [s for _, kind, s in expected if kind == "samples"] == ["ve", "vp", "subvp"]
    without = report.expected_figures("digits", ["ve"], tweedie=False)
    assert [k for _, k, _ in without] == ["fid_vs_steps", "fid_vs_nfe", "samples", "bpd", "loss",
                                          "selection"]  # fmt: skip


def test_html_is_self_contained_and_markdown_links_figures(built):
    root, out = built
    page = out["html"].read_text()
    assert page.count("data:image/png;base64,") == len(FIGURES)
    assert page.count("<table>") >= 6 and 'src="figures/' not in page
    for text in ("Sampler sweep", "Likelihood", "paper, CIFAR-10, different scale", EXTRACTOR,
                 "3.6 (reverse diffusion PC1000)", "3.02 (DDPM++ cont.)", "Provenance", "n_iters",
                 "torch-fidelity", "train_digits_ve.tsv", "12.5", "cpu count"):  # fmt: skip
        assert text in page, text
    assert "unknown (not a git checkout" in page
    # the paper's columns shaded, verdicts coloured, one extractor named once, not per row
    assert '<th class="paper">FID (paper, CIFAR-10, different scale)</th>' in page
    assert page.count('<td class="held nw">held</td>') == 5
    assert "feature extractor</th>" not in page and page.count(EXTRACTOR) == 2
    md = out["markdown"].read_text()
    for name in FIGURES:
        assert f"(figures/{name}.png)" in md
    assert "| ordering | verdict | evidence |" in md


def test_all_orderings_hold_on_the_consistent_tree(built):
    _, out = built
    verdicts = {s: held for s, held, _ in out["orderings"]}
    assert len(verdicts) == 5 and all(v is True for v in verdicts.values()), verdicts


def _orderings(cases=CASES, bpd=BPD, tmp_path=None, extra=None):
    fid_files, nll_files = _write_tree(tmp_path, cases, bpd, extra)
    fid, nll = report.load_fid_results(fid_files), report.load_nll_results(nll_files)
    return {s.split(" ")[0] + s.split(" ")[1]: (held, ev) for s, held, ev in
            report.paper_orderings(fid, nll)}  # fmt: skip


def _with_fid(match, fid):
    return [(*c[:7], fid) if all(c[i] == v for i, v in match.items()) else c for c in CASES]


FLIPS = {
    # VE P-only better than PC at 10 steps
    "PCbeats": _with_fid({0: "ve", 1: "p_only", 4: 10}, 25.0),
    # corrector-only better than a P-only rival using no more NFE
    "Corrector-onlysampling": _with_fid({1: "c_only"}, 35.0),
    # a 20-NFE PC run reaches the ODE's FID
    "Probability-flowODE": _with_fid({0: "ve", 1: "ode"}, 31.0),
    # denoising makes VP P-only worse
    "Tweediedenoising": _with_fid({0: "vp", 1: "p_only", 5: True}, 37.0),
}


@pytest.mark.parametrize("key", sorted(FLIPS))
def test_each_fid_ordering_flips_when_a_number_changes(key, tmp_path):
    assert _orderings(FLIPS[key], tmp_path=tmp_path)[key][0] is False


def test_subvp_ordering_flips_and_missing_data_gives_none(tmp_path):
    assert _orderings(bpd={**BPD, "subvp": 3.0}, tmp_path=tmp_path / "a")["Sub-VPhas"][0] is False
    sparse = _orderings([CASES[0]], {"ve": 3.0}, tmp_path=tmp_path / "b")
    assert all(held is None for held, _ in sparse.values())
    assert all(ev.startswith("not decidable") for _, ev in sparse.values())


def test_paper_numbers_only_for_the_same_case():
    row = {"sde": "ve", "sampler": "pc", "predictor": "reverse_diffusion",
           "corrector": "langevin", "steps": 1000, "kind": "pc"}  # fmt: skip
    assert report.paper_fid(row) == (3.60, "reverse diffusion PC1000")
    assert report.paper_fid({**row, "steps": 999}) is None
    assert report.paper_fid({**row, "sde": "subvp"}) is None
    ode = {"sde": "vp", "sampler": "ode", "predictor": "euler", "corrector": "none",
           "steps": 1000, "kind": "ode"}  # fmt: skip
    assert report.paper_fid(ode)[0] == 3.59
    assert report.paper_bpd("subvp") == (3.02, "DDPM++ cont.") and report.paper_bpd("ve") is None


def test_sampler_kind_from_fields():
    def kind(sampler, pred, corr):
        return report.sampler_kind({"sampler": sampler, "predictor": pred, "corrector": corr})

    assert kind("pc", "reverse_diffusion", "langevin") == "pc"
    assert kind("x", "ancestral", "none") == "predictor"
    assert kind("x", "none", "ald") == "corrector"
    assert kind("ode_heun", "none", "none") == "ode"
    assert kind("x", "rk45", None) == "ode"
    assert kind("sde-edm", "edm", "none") == "sde"
    assert kind("x", "dpmpp-2m-sde", "none") == "sde"


def test_bad_inputs_name_the_file(tmp_path):
    bad = tmp_path / "case.json"
    bad.write_text(json.dumps({"dataset": "digits", "sde": "ve"}))
    with pytest.raises(ValueError, match="case.json lacks the field"):
        report.load_fid_results([bad])
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="cannot read results file"):
        report.load_nll_results([bad])


def test_empty_inputs_still_give_a_report(tmp_path):
    out = report.build_report([], [], tmp_path / "reports")
    assert out["figures"] == []
    assert _csv(out["metrics_csv"]) == [] and out["metrics_csv"].read_text().startswith("dataset,")
    assert "(no data)" in out["html"].read_text()
    assert all(held is None for _, held, _ in out["orderings"])


def test_a_difference_within_the_noise_is_undecided_and_pairing_decides_it(tmp_path):
    """PC 39.5 vs P-only 40 (VE, 10 steps): unpaired intervals overlap, the paired one does not."""
    close = _with_fid({0: "ve", 1: "pc", 4: 10, 5: True}, 39.5)
    assert _orderings(close, tmp_path=tmp_path / "a")["PCbeats"][0] is True
    # the same FIDs with independent replicates (no pairing): the intervals overlap
    loose = _orderings(close, tmp_path=tmp_path / "b",
                       extra=lambda c: {"fid_bootstrap": replicates(c[7], own=1.5, shared=0.0,
                                                                    seed=int(c[7] * 7) + c[6])})  # fmt: skip
    held, evidence = loose["PCbeats"]
    assert held is None and "undecided of" in evidence and "? digits/ve pc" in evidence
    # without any interval nothing is decided
    none = _orderings(tmp_path=tmp_path / "c", extra=lambda c: {"fid_bootstrap": None})
    assert all(held is None for key, (held, _) in none.items() if key != "Sub-VPhas")


def test_paired_difference_interval_against_a_hand_computation():
    from scoresde.report import uncertainty

    a = {"fid": 10.0, "fid_bootstrap": replicates(10.0, seed=1), "bootstrap_seed": 0,
         "n_samples": 64, "n_reference": 100, "dataset": "d", "feature_extractor": "x"}  # fmt: skip
    b = {**a, "fid": 11.0, "fid_bootstrap": replicates(11.0, seed=2)}
    d = torch.tensor(a["fid_bootstrap"], dtype=torch.float64) - torch.tensor(b["fid_bootstrap"])
    q = torch.quantile(d - d.mean(), torch.tensor([0.025, 0.975], dtype=torch.float64))
    cmp = uncertainty.fid_difference(a, b, 0.95)
    assert cmp["how"] == "paired bootstrap" and cmp["verdict"] is True
    assert (cmp["lo"], cmp["hi"]) == pytest.approx((-1.0 + float(q[0]), -1.0 + float(q[1])))
    # different resample seeds: not paired; the two stored intervals decide (they overlap here)
    c = {**b, "bootstrap_seed": 1}
    assert uncertainty.fid_difference(a, c, 0.95)["how"] == "interval overlap"
    assert uncertainty.fid_difference(a, c, 0.95)["verdict"] is None
    sep = {"fid": 20.0, "fid_ci_low": 18.0, "fid_ci_high": 22.0}
    assert uncertainty.fid_difference({"fid": 10.0, "fid_ci_low": 9.0, "fid_ci_high": 17.9}, sep,
                                      0.95)["verdict"] is True  # fmt: skip


def test_bits_per_dim_difference_uses_the_standard_errors():
    from scoresde.report import uncertainty

    z = 1.959963984540054
    a, b = {"bpd": 2.0, "bpd_sem": 0.03}, {"bpd": 2.1, "bpd_sem": 0.04}
    cmp = uncertainty.bpd_difference(a, b, 0.95)
    assert (cmp["lo"], cmp["hi"]) == pytest.approx((-0.1 - z * 0.05, -0.1 + z * 0.05))
    assert cmp["verdict"] is True and uncertainty.bpd_difference(b, a, 0.95)["verdict"] is False
    assert uncertainty.bpd_difference(a, {"bpd": 2.05, "bpd_sem": 0.04}, 0.95)["verdict"] is None
    per = {"bpd": 2.0, "bpd_per_image": [2.0, 2.2, 1.8, 2.0]}
    other = {"bpd": 2.1, "bpd_per_image": [2.1, 2.3, 1.9, 2.1]}  # every image 0.1 higher
    paired = uncertainty.bpd_difference(per, other, 0.95)
    assert paired["how"] == "paired over test images" and paired["hi"] == pytest.approx(-0.1)


def test_denoising_that_is_not_tweedie_is_left_out_of_the_tweedie_ordering(tmp_path):
    flagged = _orderings(tmp_path=tmp_path, extra=lambda c: {"denoise_is_tweedie": False}
                         if c[0] == "vp" and c[1] == "p_only" else {})  # fmt: skip
    held, evidence = flagged["Tweediedenoising"]
    assert "of 1 comparisons" in evidence and "1 case(s) left out" in evidence and held is True
    assert "vp p_only" not in evidence and "ve pc" in evidence


def test_selection_figure_circles_the_checkpoint_select_keeps():
    from scoresde.report.plots import chosen_checkpoint

    tie = pd.DataFrame({"step": [50, 100, 150], "fid": [35.0, 35.0, 37.0]})
    assert chosen_checkpoint(tie)["step"] == 100  # select.py: min by (fid, -step)
    flagged = tie.assign(best=[True, False, False])
    assert chosen_checkpoint(flagged)["step"] == 50


def test_intervals_are_in_the_tables(built):
    root, out = built
    page = out["html"].read_text()
    assert "FID [95% interval]" in page
    r = {"fid": 30.0, "fid_bootstrap": replicates(30.0, seed=1)}
    lo, hi = report.uncertainty.fid_interval(r, 0.95)
    assert lo < 30.0 < hi and f"30.0 [{lo:.1f}, {hi:.1f}]" in page and hi - lo > 1
    assert not math.isnan(lo)
    assert "2.400 ± 0.050" in page and f"[{2.4 - 1.96 * 0.05:.2f}, {2.4 + 1.96 * 0.05:.2f}]" in page


def test_report_in_headless_chromium_loads_every_figure_and_fits_the_window(built, tmp_path):
    """The real page in Debian's chromium: a screenshot, every <img> decoded (naturalWidth > 0),
    no horizontal overflow at a laptop width (wide tables scroll inside their own box)."""
    from scoresde.report import browser

    if browser.find_chromium() is None:
        pytest.skip("chromium is not installed (`make test` installs Debian's chromium as root)")
    _, out = built
    result = browser.check_page(out["html"], width=1024)
    assert len(result["images"]) == len(FIGURES)
    assert all(i["width"] > 0 for i in result["images"]), result["images"]
    assert browser.problems(result) == [] and result["scrollWidth"] <= 1024
    png = browser.screenshot(out["html"], tmp_path / "shot.png", width=1024, height=700)
    head = png.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    assert (int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")) == (1024, 700)


def test_browser_check_flags_a_broken_image_and_overflow(tmp_path):
    from scoresde.report import browser

    if browser.find_chromium() is None:
        pytest.skip("chromium is not installed (`make test` installs Debian's chromium as root)")
    page = tmp_path / "bad.html"
    page.write_text("<!DOCTYPE html><html><body><figure id='f'><img alt='x' src='data:image/png;"
                    "base64,AAAA'></figure><div style='width:3000px'>wide</div></body></html>")
    bad = browser.problems(browser.check_page(page, width=800))
    assert len(bad) == 2 and "'f' did not load" in bad[0] and "px wide in a 800 px viewport" in bad[1]


@pytest.mark.parametrize("n, channels, nrow", [(64, 1, 8), (5, 1, 8), (13, 3, 4), (30, 1, 16)])
def test_tile_equals_torchvision_make_grid(n, channels, nrow):
    from torchvision.utils import make_grid

    from scoresde.report.plots import tile

    images = torch.randint(0, 256, (n, channels, 8, 8), dtype=torch.uint8)
    expected = make_grid(images, nrow=nrow, padding=1, pad_value=255).permute(1, 2, 0)
    assert torch.equal(tile(images, nrow, 255), expected)
    unit = images.float() / 255
    expected = make_grid(unit, nrow=nrow, padding=1, pad_value=1.0).permute(1, 2, 0)
    assert torch.equal(tile(unit, nrow, 1.0), expected)


def test_report_package_does_not_import_torchvision():
    code = ("import sys, scoresde.report, scoresde.report.plots, scoresde.report.inverse, "
            "scoresde.report.controllable, scoresde.stages.report; "
            "assert 'torchvision' not in sys.modules, 'torchvision imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("share, verdict", [(0.0, True), (0.5, False), (0.04, None)])
def test_the_copy_verdict_reads_every_cases_memorised_interval(tmp_path, share, verdict):
    """No verdict without a memorised share (above); with one: held below 5%, not held above,
    undecided when an interval straddles 5% (Wilson intervals of 400 samples)."""
    from scoresde.metrics.manifold import wilson_interval

    k = round(share * 400)
    lo, hi = wilson_interval(k, 400)

    def extra(case):
        return {"memorised": k / 400, "memorised_ci_low": lo, "memorised_ci_high": hi}

    got = _orderings(tmp_path=tmp_path, extra=extra)
    held, evidence = got["Samplesare"]
    assert held is verdict and evidence.count("memorised") == len(CASES)
    assert len(got) == 6
