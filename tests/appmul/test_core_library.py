import json

import numpy as np
import pytest

from fames.appmul.core import AppMul, Cost, exact_lut, operand_values
from fames.appmul.library import Library
from fames.appmul.metrics import error_metrics, numerical_rank
from fames.errors import AppMulError


def _trunc(a_bits=4, w_bits=4, signed=False, k=2):
    ex = exact_lut(a_bits, w_bits, signed, signed)
    return AppMul(f"t{k}_{a_bits}x{w_bits}{signed}", a_bits, w_bits, signed, signed, (ex >> k) << k)


def test_operand_values_twos_complement():
    assert operand_values(3, True).tolist() == [0, 1, 2, 3, -4, -3, -2, -1]
    assert operand_values(2, False).tolist() == [0, 1, 2, 3]
    assert exact_lut(8, 8, True, True)[255, 128] == 128  # (-1) * (-128)


@pytest.mark.parametrize(
    "kw, msg",
    [
        (dict(lut=np.zeros((16, 8), np.int32)), "shape"),
        (dict(lut=np.zeros((16, 16), np.complex64)), "dtype"),
        (dict(lut=np.full((16, 16), 0.5)), r"LUT\[0, 0\] = 0.5 is not an integer \(256 such"),
        (dict(lut=np.where(np.eye(16) > 0, np.nan, 0.0)), r"LUT\[0, 0\] = nan is not an integer \(16 such"),
        (dict(lut=np.full((16, 16), 256, np.int32)), "product range"),
        (dict(lut=np.full((16, 16), -1, np.int32)), "product range"),
        (dict(a_bits=9, lut=np.zeros((512, 16), np.int32)), "2..8"),
    ],
)
def test_bad_appmul_is_rejected(kw, msg):
    args = dict(name="x", a_bits=4, w_bits=4, a_signed=False, w_signed=False) | kw
    with pytest.raises(AppMulError, match=msg):
        AppMul(**args)


def test_integer_valued_float_lut_is_taken_as_integers():
    exact = exact_lut(4, 4, True, True)
    m = AppMul("x", 4, 4, True, True, exact.astype(np.float64))  # e.g. read by np.loadtxt
    assert m.lut.dtype == np.int32 and np.array_equal(m.lut, exact) and m.is_exact()


def test_library_round_trip(tmp_path):
    ms = [_trunc(k=k) for k in (0, 1, 2)] + [_trunc(3, 5, True, 1)]
    ms[0].verilog, ms[0].top = "module t0(); endmodule\n", "t0"
    ms[1].cost = Cost(area_um2=10.5, delay_ns=0.3, relative={"area": 0.9})
    Library(ms).save(tmp_path / "lib")
    back = Library.load(tmp_path / "lib")
    assert back.names == [m.name for m in ms]
    for a, b in zip(ms, back, strict=True):
        assert np.array_equal(a.lut, b.lut) and a.widths == b.widths and a.verilog == b.verilog
    assert back["t1_4x4False"].cost.area_um2 == 10.5 and back["t1_4x4False"].cost.relative == {"area": 0.9}
    assert len(back.select(3, 5, True, True)) == 1
    # names that are parameters of np.savez (a design imported from file.v is named "file")
    named = [AppMul(n, 2, 2, False, False, exact_lut(2, 2) + i) for i, n in enumerate(("file", "compress", "args"))]
    Library(named).save(tmp_path / "lib2")
    again = Library.load(tmp_path / "lib2")
    assert again.names == ["file", "compress", "args"]
    assert all(np.array_equal(a.lut, b.lut) for a, b in zip(named, again, strict=True))


def test_library_duplicate_names_and_corrupt_files(tmp_path):
    with pytest.raises(AppMulError, match="duplicate"):
        Library([_trunc(k=1), _trunc(k=1)])
    d = Library([_trunc(k=1)]).save(tmp_path / "lib")
    idx = json.loads((d / "index.json").read_text())
    idx["appmuls"].append(dict(idx["appmuls"][0]))
    (d / "index.json").write_text(json.dumps(idx))
    with pytest.raises(AppMulError, match="duplicate"):
        Library.load(d)
    idx["appmuls"] = idx["appmuls"][:1]
    idx["appmuls"][0]["w_bits"] = 3
    (d / "index.json").write_text(json.dumps(idx))
    with pytest.raises(AppMulError, match="shape"):
        Library.load(d)
    with pytest.raises(AppMulError, match="missing"):
        Library.load(tmp_path)  # no index.json


def test_failed_save_leaves_previous_library(tmp_path):
    d = Library([_trunc(k=1)]).save(tmp_path / "lib")
    a, b = _trunc(k=2), _trunc(k=3)
    a.verilog = b.verilog = "module same(); endmodule"
    a.top = b.top = "same"
    with pytest.raises(AppMulError, match="share the Verilog module name"):
        Library([a, b]).save(d)
    assert Library.load(d).names == ["t1_4x4False"]
    assert [p.name for p in tmp_path.iterdir()] == ["lib"]


def test_metrics_closed_form():
    # Truncating the 2 LSBs of an unsigned 4x4 product: error = -(P mod 4).
    m = _trunc(k=2)
    ex = exact_lut(4, 4)
    d = -(ex % 4)
    met = error_metrics(m)
    assert met.er == pytest.approx((d != 0).mean())
    assert met.med == pytest.approx(np.abs(d).mean())
    assert met.mean_error == pytest.approx(d.mean())
    assert met.var_error == pytest.approx(d.var())
    assert met.wce == 3 and met.nmed == pytest.approx(np.abs(d).mean() / 225)
    nz = ex != 0
    assert met.mred == pytest.approx((np.abs(d[nz]) / ex[nz]).mean())
    assert met.wcre == pytest.approx((np.abs(d[nz]) / ex[nz]).max())  # 3/3 = 1 at 1x3


def test_metrics_histogram_and_rank():
    m = _trunc(k=2)
    hist = np.zeros((16, 16))
    hist[3, 5] = 1.0  # only 3*5 = 15 -> 12, error -3
    met = error_metrics(m, hist)
    assert (met.er, met.med, met.wce, met.mean_error, met.var_error) == (1.0, 3.0, 3.0, -3.0, 0.0)
    assert met.mred == pytest.approx(0.2)
    u, v = np.arange(16.0), np.arange(16.0) % 3
    assert numerical_rank(np.outer(u, v) + np.outer(v, u)) == 2
    assert numerical_rank(np.zeros((4, 4))) == 0
    with pytest.raises(AppMulError, match="histogram"):
        error_metrics(m, np.ones((4, 4)))


def test_hand_edited_library_faults_are_named_and_never_answered_by_replacing_the_library(tmp_path):
    from fames.appmul.library import editing

    ms = [_trunc(k=1), _trunc(k=2)]
    ms[0].cost = Cost(area_um2=10.5, delay_ns=0.3)
    d = Library(ms).save(tmp_path / "lib")
    idx = json.loads((d / "index.json").read_text())
    idx["appmuls"][0]["cost"]["area_um2"] = "12.5"  # crashed `fames lib show` (a format code on a string)
    (d / "index.json").write_text(json.dumps(idx))
    with pytest.raises(AppMulError, match=r"cost of AppMul 't1_4x4False' does not read: Cost.area_um2"):
        Library.load(d)
    (d / "index.json").write_text(json.dumps(idx)[:40])  # damaged: adding to it advised --force, which wiped it
    with pytest.raises(AppMulError, match="not valid JSON.*repair or restore it: --force would replace"), editing(d):
        pass
    assert {"index.json", "luts.npz"} <= {p.name for p in d.iterdir()}


def test_a_design_wrong_on_zero_products_says_so_although_its_mred_is_zero():
    """MRED leaves out the pairs whose exact product is 0 (EvoApproxLib's definition), the most frequent ones after
    a ReLU: a synthesized 2x2s design wrong only there showed MRED 0.000% and nothing else."""
    from fames.appmul.summary import appmul_row

    lut = exact_lut(2, 2, True, True).copy()
    lut[0, 2] = -8  # 0 x (-2)
    row = appmul_row(AppMul("z", 2, 2, True, True, lut))
    assert row["mred_pct"] == 0 and row["zero_product_errors"] == 1
    assert "wrong on 1 of 7 zero products (not in MRED)" in row["note"]
    assert appmul_row(AppMul("e", 2, 2, True, True, exact_lut(2, 2, True, True)))["zero_product_errors"] == 0
