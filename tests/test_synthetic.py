import json

import nibabel as nib
import numpy as np

from medseg.data.synthetic import make_case, write_dataset
from medseg.lesions import label_lesions


def test_deterministic_by_seed(tmp_path):
    a = write_dataset(tmp_path / "a", 2, seed=3, shape=(40, 40, 24))
    b = write_dataset(tmp_path / "b", 2, seed=3, shape=(40, 40, 24))
    c = write_dataset(tmp_path / "c", 2, seed=4, shape=(40, 40, 24))

    def img(p):
        return np.asanyarray(nib.load(str(p.parent / "imagesTr" / "synth_001.nii.gz")).dataobj)

    assert np.array_equal(img(a), img(b)) and not np.array_equal(img(a), img(c))


def test_msd_layout_and_geometry(tmp_path):
    meta_path = write_dataset(tmp_path, 3, seed=0, test_cases=1, shape=(40, 40, 24))
    meta = json.loads(meta_path.read_text())
    assert meta["numTraining"] == 3 and len(meta["training"]) == 3 and len(meta["test"]) == 1
    from medseg.data.sources.discover import find_cases

    assert find_cases(tmp_path, "test")[0].label is None and find_cases(tmp_path, "test_labeled")[0].label is not None
    img = nib.load(str(tmp_path / meta["training"][0]["image"]))
    lab = nib.load(str(tmp_path / meta["training"][0]["label"]))
    assert img.shape == lab.shape == (40, 40, 24) and np.array_equal(img.affine, lab.affine)
    linear = img.affine[:3, :3]
    assert not np.allclose(linear, np.diag(np.diag(linear)))  # oblique
    spacing = np.linalg.norm(linear, axis=0)
    assert np.allclose(spacing, [1.5, 1.5, 2.0], atol=1e-4)  # anisotropic
    assert int(img.header["sform_code"]) == 1


def test_lesion_counts_sizes_and_empty_cases():
    counts, sizes = [], []
    for i in range(30):
        case = make_case(np.random.default_rng([1, i]))
        labels, n = label_lesions(case.label)
        assert n == case.n_lesions and 0 <= n <= 8
        counts.append(n)
        sizes += list(np.bincount(labels.ravel())[1:] * 1.5 * 1.5 * 2.0)
    assert 0 in counts and max(counts) >= 6
    diam = (6 * np.array(sizes) / np.pi) ** (1 / 3)  # equivalent sphere diameter, mm
    assert diam.min() < 6 and diam.max() > 20
