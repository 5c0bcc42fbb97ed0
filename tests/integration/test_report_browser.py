"""The report and the MLflow dashboard in a real headless Chromium (Playwright), against a real `facebench server`.

Skipped cleanly where no browser is installed: `make browser` installs Playwright and a headless Chromium
(pipelines/get_chromium.py); FACEBENCH_CHROMIUM names another Chromium executable. FACEBENCH_SCREENSHOTS
names a folder to keep the screenshots in (the report, the runs page, a run page).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from facebench import tracking
from facebench.report import build_report
from facebench.train import identity
from tests.conftest import REPO
from tests.integration.local_cluster import mlflow_server

pytestmark = pytest.mark.integration

playwright = pytest.importorskip("playwright.sync_api", reason="no Playwright: `make browser` installs it")


def _chromium() -> str | None:
    """FACEBENCH_CHROMIUM, else the project's .browser/chromium (make browser), else Playwright's own."""
    for candidate in (os.environ.get("FACEBENCH_CHROMIUM"), str(REPO / ".browser" / "chromium")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="module")
def browser():
    executable = _chromium()
    with playwright.sync_playwright() as p:
        try:
            chromium = p.chromium.launch(executable_path=executable, timeout=60_000)
        except Exception as exc:  # no browser anywhere: Playwright says how to get one
            pytest.skip(f"no headless Chromium ({str(exc).splitlines()[0]}): `make browser` installs one")
        yield chromium
        chromium.close()


def _shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("FACEBENCH_SCREENSHOTS") or tmp_path / "shots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _ced(nme: float) -> pd.DataFrame:
    t = np.linspace(0.0, 0.1, 51)
    return pd.DataFrame({"threshold": t, "fraction": np.clip(t / (2 * nme), 0, 1)})


def _store(root: Path) -> tuple[str, dict[str, str]]:
    """A real SQLite store with landmark runs as training logs them (metrics per epoch, test metrics, CED
    artifacts, cost, device, description)."""
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp_id = tracking.get_or_create_experiment(client, "wing", root)
    ids = {}
    for i, (loss, nme) in enumerate((("l2", 0.30), ("l1", 0.29), ("wing", 0.28))):
        key = f"w300_cnn6_{loss}"
        tags = {"facebench.kind": "train", "facebench.experiment": key, "facebench.paper": "wing",
                "facebench.task": "landmarks", "facebench.dataset": "w300", "facebench.model": "cnn6",
                "facebench.loss": loss, "facebench.pdb": "false", "facebench.variant": "",
                "facebench.profile": "smoke", "facebench.code_version": "0123456789abcdef",
                "facebench.code_hash": identity.code_hash(identity.training_modules("landmarks")),
                "facebench.device": "CPU Test (2 cores) x1", "mlflow.note.content": f"experiment `{key}`"}
        run_id = client.create_run(exp_id, run_name=key, tags=tags, start_time=1_000 + i).info.run_id
        for epoch in (1, 2):
            tracking.log_metrics(client, run_id, {"train_loss": 1.0 / epoch, "val_nme": nme + 0.01 / epoch},
                                 step=epoch)
        tracking.log_metrics(client, run_id, {f"test_{s}_nme": nme for s in ("common", "challenging", "full")}
                             | {"test_full_nme_ip": 0.7 * nme, "train_wall_s": 30.0 + i, "train_images_per_s": 90.0},
                             step=2)
        tracking.log_tables(client, run_id, {f"ced/{s}.csv": _ced(nme) for s in ("common", "challenging", "full")})
        client.set_terminated(run_id, status="FINISHED", end_time=2_000 + i)
        ids[key] = run_id
    return uri, ids


@pytest.fixture()
def server(tmp_path):
    """A report built from a fresh store, and `facebench server` on 127.0.0.1 serving that store."""
    uri, ids = _store(tmp_path)
    with mlflow_server(tmp_path, backend_store_uri=uri) as base:
        out = build_report(uri, tmp_path / "no-prepared", tmp_path / "reports", "smoke", ["w300"],
                           {"commit": "0123456789abcdef", "data": "synthetic (procedural faces)"},
                           base)
        yield {"base": base, "ids": ids, "html": Path(out["html"]), "uri": uri}


def _check_page(page) -> None:
    """Every image loaded and shown whole (inside the page's width), every figure captioned, every anchor
    link landing on an element of that id."""
    images = page.eval_on_selector_all("img", "els => els.map(e => ({ok: e.complete && e.naturalWidth > 0, "
                                              "right: e.getBoundingClientRect().right, alt: e.alt}))")
    assert images, "no image on the page"
    width = page.evaluate("document.documentElement.clientWidth")
    for image in images:
        assert image["ok"], f"image did not load: {image['alt']}"
        assert image["right"] <= width + 1, f"image runs off the page: {image['alt']}"
    captions = page.eval_on_selector_all("figure", "els => els.map(e => (e.querySelector('figcaption') || {}).textContent || '')")
    assert captions and all(len(c) > 20 for c in captions)
    missing = page.evaluate("[...document.querySelectorAll('a[href^=\"#\"]')].map(a => a.getAttribute('href').slice(1))"
                            ".filter(id => !document.getElementById(id))")
    assert missing == []


def test_the_committed_report_shows_every_figure_whole_and_every_anchor_lands(browser, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto((REPO / "reports" / "leaderboard.html").as_uri())
    _check_page(page)
    assert page.locator("h2#summary-do-the-papers-claims-hold-here").count() == 1
    page.screenshot(path=str(_shots(tmp_path) / "report.png"), full_page=False)
    page.close()


def test_run_links_open_the_run_in_the_mlflow_ui_and_it_shows_the_metrics(browser, server, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(server["html"].as_uri())
    _check_page(page)
    links = page.eval_on_selector_all(f"a[href^='{server['base']}'][href*='/runs/']", "els => els.map(e => e.href)")
    run_ids = {re.search(r"/runs/([0-9a-f]+)\?workflowType=machine_learning$", link).group(1) for link in links}
    assert run_ids == set(server["ids"].values())  # every run shown links to its run

    # each link resolves: the UI's page of that run, naming it
    for link in sorted(set(links)):
        key = next(k for k, run_id in server["ids"].items() if run_id in link)
        run_page = browser.new_page(viewport={"width": 1400, "height": 1000})
        run_page.goto(link)
        run_page.get_by_text(key).first.wait_for(timeout=90_000)
        if key == "w300_cnn6_wing":  # the run page lists the run's metrics with their values
            run_page.get_by_text("test_full_nme_ip").first.wait_for(timeout=90_000)
            body = run_page.inner_text("body")
            assert "val_nme" in body and "train_wall_s" in body
            assert "0.196" in body  # test_full_nme_ip = 0.7 x 0.28
            run_page.screenshot(path=str(_shots(tmp_path) / "mlflow_run.png"), full_page=True)
        run_page.close()

    # the report's header links the experiment, which opens on its training runs (not on GenAI traces)
    client = MlflowClient(server["uri"])
    experiment = client.get_experiment_by_name("facebench/wing")
    runs_page = browser.new_page(viewport={"width": 1400, "height": 900})
    header = page.eval_on_selector_all(f"p a[href*='/#/experiments/{experiment.experiment_id}?']", "els => els.map(e => e.href)")
    assert header, "the header links the experiment"
    runs_page.goto(header[0])
    runs_page.get_by_text("w300_cnn6_wing").first.wait_for(timeout=90_000)
    assert f"/experiments/{experiment.experiment_id}/runs" in runs_page.url
    runs_page.screenshot(path=str(_shots(tmp_path) / "mlflow_runs.png"))
    runs_page.close()
    page.close()
