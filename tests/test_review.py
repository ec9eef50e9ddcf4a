"""The review site (issue 36): written inside --out from masks alone, thumbnails that show the mask,
lesion statuses and world coordinates that agree with the written masks, marks kept through the
--serve API; and, in headless Chromium (skipped with a reason where it is not installed), pages
that open from file:// and from --serve without console errors, the overlay colour on the canvas
at a lesion, the crosshair moved to a clicked lesion's world coordinate, a mark saved and read back.

Predictions are synthetic masks: the reference less its smallest lesion (a miss) plus a cube
away from every lesion (a false positive), so no model is needed.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import shutil
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
from matplotlib.image import imread
from scipy import ndimage
from typer.testing import CliRunner

from medseg.cli.app import app
from medseg.data.case import Case
from medseg.data.synthetic import make_case
from medseg.inference.lesion_table import lesion_rows
from medseg.io.review_marks import MARKS_FILE, MARKS_FORMAT, read_marks
from medseg.lesions import label_lesions
from medseg.review.display import coarse_mask, display_grid, encode_mask
from medseg.review.run import review_predictions
from medseg.review.serve import make_server
from medseg.viz.show import to_ras

SHAPE = (56, 56, 36)
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def _save(array: np.ndarray, affine: np.ndarray, path: Path, slope: float = 1.0) -> None:
    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_slope_inter(slope, 0.0)
    nib.save(img, str(path))


def _far_cube(label: np.ndarray, brain: np.ndarray) -> tuple[slice, slice, slice]:
    """A 4x4x4 box inside ``brain``, as far from every lesion as possible."""
    inner = ndimage.binary_erosion(brain, iterations=4)
    distance = np.where(inner, ndimage.distance_transform_edt(~label.astype(bool)), 0)
    x, y, z = np.unravel_index(int(np.argmax(distance)), label.shape)
    return np.s_[x - 2 : x + 2, y - 2 : y + 2, z - 2 : z + 2]


def write_case(root: Path, name: str, seed: int) -> SimpleNamespace:
    """Scan, label, prediction (one lesion missed, one false positive) and probability map."""
    case = make_case(np.random.default_rng([seed, 5]), SHAPE, (1.5, 1.5, 2.0), n_lesions=3)
    labels, n = label_lesions(case.label)
    assert n >= 2
    pred = case.label.astype(bool).copy()
    pred[labels == int(np.argmin(np.bincount(labels.ravel())[1:])) + 1] = False
    pred[_far_cube(case.label, case.image > 450)] = True
    prob = np.where(pred, 0.9, 0.02)
    for folder in ("images", "labels", "pred"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    _save(case.image, case.affine, root / "images" / f"{name}.nii.gz")
    _save(case.label, case.affine, root / "labels" / f"{name}.nii.gz")
    _save(pred.astype(np.uint8), case.affine, root / "pred" / f"{name}.nii.gz")
    _save(np.rint(prob * 255).astype(np.uint8), case.affine, root / "pred" / f"{name}_prob.nii.gz", 1 / 255)
    return SimpleNamespace(name=name, image=case.image, label=case.label.astype(bool), pred=pred, affine=case.affine)


def invoke(*args) -> SimpleNamespace:
    res = CliRunner().invoke(app, [str(a) for a in args], prog_name="medseg")
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    return SimpleNamespace(returncode=res.exit_code, stdout=res.stdout, stderr=res.stderr)


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def site_data(out: Path, script: str = "data/site.js") -> dict:
    text = (out / "review" / script).read_text()
    return json.loads(text[text.index("=") + 1 :].strip().rstrip(";"))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("review")
    cases = [write_case(root, "synth_a", 1), write_case(root, "synth_b", 2)]
    before = digest(root)
    out = root / "site"
    res = invoke("review", root / "pred", "--images", root / "images", "--ref", root / "labels", "--out", out)
    assert res.returncode == 0, res.stdout + res.stderr
    return SimpleNamespace(root=root, out=out, cases=cases, before=before, stdout=res.stdout)


# ------------------------------------------------------------------------------------ without a browser


def test_site_is_written_inside_out_and_leaves_inputs_alone(site):
    written = {str(p.relative_to(site.out)) for p in site.out.rglob("*") if p.is_file()}
    assert written and all(name.startswith("review/") for name in written)
    expected = {"review/index.html", "review/data/site.js", "review/static/niivue.umd.js"}
    expected |= {"review/static/niivue-LICENSE.txt", "review/case_synth_a.html", "review/data/case_synth_b.js"}
    assert expected <= written
    assert {k: v for k, v in digest(site.root).items() if not k.startswith("site")} == site.before
    assert "wrote the review of 2 scan(s)" in site.stdout
    data = site_data(site.out)
    assert [s["name"] for s in data["scans"]] == ["synth_a", "synth_b"]
    assert {p["file"] for p in data["pictures"]} == {"img/froc.png", "img/volumes.png", "img/dice.png"}
    assert all((site.out / "review" / p["file"]).stat().st_size > 1000 for p in data["pictures"])


def test_statuses_and_centroids_match_the_masks(site):
    case = site.cases[0]
    data = site_data(site.out, "data/case_synth_a.js")
    pred_rows = lesion_rows(case.pred, np.zeros(case.pred.shape), case.affine)
    gt_rows = lesion_rows(case.label, np.zeros(case.label.shape), case.affine)
    lesions = {lesion["key"]: lesion for lesion in data["lesions"]}
    assert len(lesions) == len(pred_rows) + len(gt_rows)
    for kind, rows in (("pred", pred_rows), ("gt", gt_rows)):
        for row in rows:
            got = lesions[f"{kind}:{row['id']}"]
            centroid = [row["centroid_x_mm"], row["centroid_y_mm"], row["centroid_z_mm"]]
            assert np.allclose(got["centroid_mm"], centroid, atol=0.01)
    statuses = [lesion["status"] for lesion in data["lesions"]]
    assert statuses.count("missed") == 1 and statuses.count("false_positive") == 1
    fp = next(lesion for lesion in data["lesions"] if lesion["status"] == "false_positive")
    assert fp["max_prob"] == pytest.approx(0.9, abs=0.01) and fp["volume_mm3"] == pytest.approx(64 * 4.5)
    assert {c["key"] for c in data["crops"]} == {
        lesion["key"] for lesion in data["lesions"] if lesion["status"] in ("missed", "false_positive")
    }


def test_thumbnail_matches_its_mask_slice(site):
    case = site.cases[0]
    row = site_data(site.out)["scans"][0]
    pred, ref = to_ras(case.pred, case.affine).data, to_ras(case.label, case.affine).data
    z = int(np.argmax(pred.sum(axis=(0, 1))))
    assert row["thumb_slice"] == z
    rgb = (imread(site.out / "review" / row["thumb"])[..., :3] * 255).round().astype(int)
    expected = np.kron(pred[:, :, z].T[::-1], np.ones((2, 2), int)).astype(bool)
    ref_slice = ref[:, :, z]  # its outline is drawn green over everything
    outline = np.kron((ref_slice & ~ndimage.binary_erosion(ref_slice)).T[::-1], np.ones((2, 2), int)).astype(bool)
    red = (rgb[..., 0] > rgb[..., 1] + 40) & (rgb[..., 0] > rgb[..., 2] + 40)
    assert rgb.shape[:2] == expected.shape
    assert np.array_equal(red, expected & ~outline)
    grey = (rgb[..., 0] == rgb[..., 1]) & (rgb[..., 1] == rgb[..., 2])
    assert np.array_equal(grey, ~expected & ~outline)


def test_display_copy_keeps_world_coordinates():
    mask = np.zeros((30, 20, 11), bool)
    mask[7, 4, 9] = True  # one voxel: a block keeps it
    affine = np.array([[-1.5, 0.1, 0, 10], [0.1, 1.5, 0, -5], [0, 0, 2.0, 3], [0, 0, 0, 1]])
    grid = display_grid(mask.shape, affine, max_voxels=500)
    assert grid.step == 3 and grid.shape == (10, 7, 4)
    small = coarse_mask(mask, grid.step)
    assert small.sum() == 1 and small[2, 1, 3]
    block_centre = affine @ [7, 4, 10, 1]  # full-grid voxels 6..8, 3..5, 9..11: centre 7, 4, 10
    assert np.allclose(grid.affine @ [2, 1, 3, 1], block_centre)
    img = nib.Nifti1Image.from_bytes(gzip.decompress(base64.b64decode(encode_mask(small, grid.affine))))
    assert np.allclose(img.affine, grid.affine) and np.array_equal(np.asarray(img.dataobj) > 0, small)


@pytest.fixture()
def server(site, tmp_path):
    out = tmp_path / "served"
    shutil.copytree(site.out, out)
    srv = make_server(out / "review", out / MARKS_FILE, ["synth_a", "synth_b"])
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield SimpleNamespace(url=f"http://127.0.0.1:{srv.server_address[1]}", out=out)
    srv.shutdown()
    srv.server_close()


def request(url: str, body: object = None, headers: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data, {"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_marks_round_trip_through_the_server(server):
    marks = [
        {
            "case": "synth_a",
            "kind": "pred",
            "id": 2,
            "decision": "reject",
            "comment": "a vessel",
            "status": "false_positive",
        },
        {"case": "synth_b", "kind": "scan", "id": None, "decision": "accept"},
    ]
    status, body = request(server.url + "/api/marks", {"format": MARKS_FORMAT, "marks": marks})
    assert status == 200 and body["saved"] == 2
    assert request(server.url + "/api/marks")[1]["marks"][0]["comment"] == "a vessel"
    kept = read_marks(server.out / MARKS_FILE)
    assert [(m.case, m.kind, m.id, m.decision) for m in kept] == [
        ("synth_a", "pred", 2, "reject"),
        ("synth_b", "scan", None, "accept"),
    ]
    bad = {"format": MARKS_FORMAT, "marks": [{"case": "../etc", "kind": "pred", "id": 1, "decision": "reject"}]}
    assert request(server.url + "/api/marks", bad)[0] == 400
    assert request(server.url + "/api/marks", {"format": MARKS_FORMAT, "marks": [], "x": 1} | {"marks": [1]})[0] == 400
    assert request(server.url + "/api/marks", {"format": MARKS_FORMAT, "marks": []}, {"Host": "evil.example"})[0] == 403
    assert (
        request(server.url + "/api/marks", {"format": MARKS_FORMAT, "marks": []}, {"Content-Type": "text/plain"})[0]
        == 415
    )
    assert len(read_marks(server.out / MARKS_FILE)) == 2  # refused posts changed nothing
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(server.url + "/../../etc/passwd", timeout=10)


def test_user_errors_are_one_line(site, tmp_path):
    res = invoke("review", tmp_path / "nothing")
    assert res.returncode == 2 and res.stderr.count("error:") == 1 and "PRED" in res.stderr
    res = invoke("evaluate", site.root / "pred", site.root / "labels", "--review")
    assert res.returncode == 2 and "--review" in res.stderr and "--out" in res.stderr


def test_evaluate_review_writes_the_site_into_its_out(site, tmp_path):
    pred, ref = site.root / "pred" / "synth_a.nii.gz", site.root / "labels" / "synth_a.nii.gz"
    res = invoke("evaluate", pred, ref, "--out", tmp_path / "ev", "--matching", "iou", "--review", "--quiet")
    assert res.returncode == 0, res.stdout + res.stderr
    assert (tmp_path / "ev" / "review" / "index.html").is_file() and (tmp_path / "ev" / "cases.csv").is_file()
    data = site_data(tmp_path / "ev")
    assert data["rule"]["matching"] == "iou" and [s["name"] for s in data["scans"]] == ["synth_a"]


def test_predict_review_pairs_the_masks_with_scans_and_dataset_cases(site, tmp_path):
    out = tmp_path / "masks"
    shutil.copytree(site.root / "pred", out)
    images, labels = site.root / "images", site.root / "labels"
    cases = [Case("synth_b", (images / "synth_b.nii.gz",), labels / "synth_b.nii.gz")]
    result = review_predictions(out, [str(images / "synth_a.nii.gz")], cases)
    assert result.scans == 2 and result.errors == []
    rows = {row["name"]: row for row in site_data(out)["scans"]}
    assert rows["synth_a"]["has_image"] and not rows["synth_a"]["has_ref"] and rows["synth_a"]["dice"] is None
    assert rows["synth_b"]["has_image"] and rows["synth_b"]["has_ref"] and rows["synth_b"]["missed"] == 1


# ------------------------------------------------------------------------------------ in headless Chromium


@pytest.fixture(scope="module")
def browser():
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.skip(f"no headless browser: {', '.join(missing)} missing (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the test extra)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        opts.add_argument(arg)
    opts.add_argument("--enable-unsafe-swiftshader")  # WebGL2 on the CPU
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    yield driver
    driver.quit()


def open_page(driver, url: str, timeout: float = 60) -> list[dict]:
    """Load ``url``, wait until a scan page's viewer is ready; the SEVERE console entries."""
    driver.get(url)
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = driver.execute_script(
            "return [document.body.dataset.page, document.body.dataset.ready, document.body.dataset.failed]"
        )
        assert state[2] is None, state[2]
        if state[0] == "index" or state[1] == "1":
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"{url}: not ready after {timeout} s")
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def lesion(driver, status: str) -> dict:
    return driver.execute_script(f"return window.MEDSEG_SCAN.lesions.find(l => l.status === '{status}')")


def test_pages_open_from_file_and_from_serve_without_errors(site, server, browser):
    for url in ((site.out / "review" / "index.html").as_uri(), server.url + "/index.html"):
        assert open_page(browser, url) == [], url
        assert browser.execute_script("return document.querySelectorAll('#scans tbody tr').length") == 2
    assert open_page(browser, (site.out / "review" / "case_synth_b.html").as_uri()) == []  # slices and 3D render


def test_canvas_shows_the_overlay_and_a_click_moves_the_crosshair(site, browser):
    assert open_page(browser, (site.out / "review" / "case_synth_a.html").as_uri() + "?view=axial") == []
    fp = lesion(browser, "false_positive")
    browser.execute_script("window.medsegReview.goTo(arguments[0])", fp["centroid_mm"])
    time.sleep(0.3)
    x, y = browser.execute_script("return window.medsegReview.screenPosition(arguments[0])", fp["centroid_mm"])
    shot = imread(io.BytesIO(browser.get_screenshot_as_png()))[..., :3] * 255
    ratio = browser.execute_script("return window.devicePixelRatio")
    # diagonal offsets: inside the 6 mm cube (~40 pixels wide), off the crosshair lines through its centre
    around = [shot[int((y + dy) * ratio), int((x + dx) * ratio)] for dx in (-10, 10) for dy in (-10, 10)]
    r, g, b = np.mean(around, axis=0)
    assert r > g + 50 and r > b + 50, (r, g, b)
    missed = lesion(browser, "missed")
    browser.find_element("css selector", f"#lesions tr[data-key='{missed['key']}']").click()
    mm = json.loads(browser.find_element("id", "viewer").get_attribute("data-crosshair-mm"))
    case = site.cases[0]
    gt = lesion_rows(case.label, np.zeros(case.label.shape), case.affine)[missed["id"] - 1]
    assert np.allclose(mm, [gt["centroid_x_mm"], gt["centroid_y_mm"], gt["centroid_z_mm"]], atol=0.01)


def test_a_mark_is_saved_and_read_back(server, browser):
    assert open_page(browser, server.url + "/case_synth_a.html?view=axial") == []
    fp = lesion(browser, "false_positive")
    browser.find_element("css selector", f"tr[data-key='{fp['key']}'] button[data-decision='reject']").click()
    browser.find_element("css selector", "#scan-review button[data-decision='reject']").click()
    deadline = time.time() + 10
    while browser.execute_script("return document.body.dataset.saved") != "2" and time.time() < deadline:
        time.sleep(0.1)
    marks = read_marks(server.out / MARKS_FILE)
    assert {(m.case, m.kind, m.id, m.decision, m.status) for m in marks} == {
        ("synth_a", "pred", fp["id"], "reject", "false_positive"),
        ("synth_a", "scan", None, "reject", ""),
    }
    assert open_page(browser, server.url + "/index.html") == []  # the index reads the marks back from the server
    cell = browser.find_element("css selector", "#scans tr[data-name='synth_a'] td:last-child")
    assert cell.text == "reject"
