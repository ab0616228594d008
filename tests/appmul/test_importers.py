import shutil

import numpy as np
import pytest

from fames.appmul.core import AppMul, exact_lut
from fames.appmul.importers import (
    import_evoapprox_checkout,
    import_evoapprox_tables,
    read_text_lut,
    write_text_lut,
)
from fames.errors import AppMulError
from tests.conftest import shared_path


def test_evoapprox_tables_load_all_and_exact_is_exact():
    src = shared_path("evoapproxlib")
    ms = import_evoapprox_tables(src)
    assert len(ms) == 246 and len({m.name for m in ms}) == 246
    exact = [m for m in ms if m.is_exact()]
    assert {m.name for m in exact} >= {"mul8u_1JJQ", "mul8s_1KV6", "mul7u_003", "mul8x4u_2DB"}
    m = next(m for m in ms if m.name == "mul8u_1JJQ")
    assert np.array_equal(m.lut, exact_lut(8, 8))
    s = next(m for m in ms if m.name == "mul8s_1KV6")
    assert s.lut[255, 128] == 128 and s.signed
    # published cost: PDP = power x delay, relative to the exact member of the same folder
    a = next(m for m in ms if m.name == "mul8u_12KA")
    assert a.cost.pdp_fj == pytest.approx(0.388 * 1.35 * 1e3)
    assert a.cost.relative["pdp"] == pytest.approx(a.cost.pdp_fj / m.cost.pdp_fj)
    assert m.cost.relative["pdp"] == pytest.approx(1.0)
    assert {(m.a_bits, m.w_bits) for m in ms} >= {(8, 2), (8, 7), (7, 7)}


HEADER = """/***
* This code is a part of EvoApproxLib library (ehw.fit.vutbr.cz/approxlib) distributed under The MIT License.
* PDK45_PWR = 0.100 mW
* PDK45_AREA = 50.5 um2
* PDK45_DELAY = 0.50 ns
***/
#include <stdint.h>
#include <stdlib.h>
"""


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler")
def test_evoapprox_checkout_compiles_c_models(tmp_path):
    d = tmp_path / "evo" / "multiplers" / "4x4_unsigned" / "pareto_pwr_mae"
    d.mkdir(parents=True)
    (d / "mul4u_EX.c").write_text(HEADER + "uint64_t mul4u_EX(const uint64_t A, const uint64_t B) { return A*B; }\n")
    (d / "mul4u_TR.c").write_text(
        HEADER + "uint64_t mul4u_TR(const uint64_t A, const uint64_t B) { return (A*B) & ~3ULL; }\n"
    )
    s = tmp_path / "evo" / "multiplers" / "4x4_signed"
    s.mkdir(parents=True)
    (s / "mul4s_EX.c").write_text(HEADER + "int16_t mul4s_EX(int8_t A, int8_t B) { return A*(B+1); }\n")
    ms = {m.name: m for m in import_evoapprox_checkout(tmp_path / "evo")}
    assert np.array_equal(ms["mul4u_EX"].lut, exact_lut(4, 4))
    assert np.array_equal(ms["mul4u_TR"].lut, exact_lut(4, 4) & ~3)
    # the signed one computes A*(B+1): wraps into the 8-bit two's-complement output word
    v = np.arange(16)
    v = np.where(v < 8, v, v - 16)
    want = np.outer(v, v + 1)
    want = ((want + 128) % 256) - 128
    assert np.array_equal(ms["mul4s_EX"].lut, want)
    assert ms["mul4u_TR"].cost.area_um2 == 50.5 and ms["mul4u_TR"].cost.relative["pdp"] == 1.0


def test_text_lut_round_trip_and_errors(tmp_path):
    ex = exact_lut(3, 4, True, True)
    m = AppMul("s3x4", 3, 4, True, True, ex - (ex & 1))
    p = write_text_lut(m, tmp_path / "s.txt")
    back = read_text_lut(p)
    assert back.widths == (3, 4, True, True) and np.array_equal(back.lut, m.lut)
    lines = p.read_text().splitlines()
    (tmp_path / "dup.txt").write_text("\n".join(lines + [lines[-1]]))
    with pytest.raises(AppMulError, match="appears 2 times"):
        read_text_lut(tmp_path / "dup.txt")
    (tmp_path / "miss.txt").write_text("\n".join(lines[:-1]))
    with pytest.raises(AppMulError, match="missing"):
        read_text_lut(tmp_path / "miss.txt")
    (tmp_path / "bad.txt").write_text("a,b,p\n1,2\n")
    with pytest.raises(AppMulError, match="bad.txt:2"):
        read_text_lut(tmp_path / "bad.txt")


def test_text_lut_as_a_matrix_or_with_float_formatted_integers(tmp_path):
    rng = np.random.default_rng(0)
    lut = exact_lut(4, 3, True, True) + rng.integers(-2, 3, (16, 8))  # not symmetric, negative products
    np.savetxt(tmp_path / "m.txt", lut)  # floats, rows = activation bit patterns
    m = read_text_lut(tmp_path / "m.txt")
    assert (m.a_bits, m.w_bits, m.a_signed, m.w_signed) == (4, 3, True, True) and np.array_equal(m.lut, lut)
    np.savetxt(tmp_path / "u.csv", exact_lut(2, 2, False, False), delimiter=",", fmt="%d", header="a x w")
    assert read_text_lut(tmp_path / "u.csv").is_exact()
    (tmp_path / "f.txt").write_text("".join(f"{a} {w} {float(a * w)}\n" for a in range(4) for w in range(4)))
    assert read_text_lut(tmp_path / "f.txt").is_exact()
    (tmp_path / "r.txt").write_text("0 0 0 0 0\n" * 4)
    with pytest.raises(AppMulError, match="4 x 5"):
        read_text_lut(tmp_path / "r.txt")
    with pytest.raises(AppMulError, match="2\\^3 columns: w_bits = 3, but 4 was asked for"):
        read_text_lut(tmp_path / "m.txt", w_bits=4)
    (tmp_path / "h.txt").write_text("0 0 0 0\n0 1 2 3\n0 2 4.5 6\n0 3 6 9\n")
    with pytest.raises(AppMulError, match="h.txt:3: non-integer field"):
        read_text_lut(tmp_path / "h.txt")
    # records with one column too many (a, w, approx, exact: 256 x 4) imported as an 8x2 matrix, silently
    (tmp_path / "c.csv").write_text("a,w,approx,exact\n" + "".join(f"{a},{w},{a * w >> 1 << 1},{a * w}\n"
                                                                   for a in range(16) for w in range(16)))
    with pytest.raises(AppMulError, match="4 fields per line under a header, and the first two columns look like"):
        read_text_lut(tmp_path / "c.csv")


def test_npy_lut_and_value_ordered_signed_matrices(tmp_path):
    rng = np.random.default_rng(1)
    lut = exact_lut(4, 3, True, True) + rng.integers(-2, 3, (16, 8))
    np.save(tmp_path / "m.npy", lut)  # as np.save writes it: the matrix, rows = activation bit patterns
    m = read_text_lut(tmp_path / "m.npy")
    assert (m.a_bits, m.w_bits, m.a_signed) == (4, 3, True) and np.array_equal(m.lut, lut)
    # the table a user builds from np.arange(-8, 8) is ordered by value, not bit pattern: named, with the fix
    v = np.arange(-8, 8)
    np.save(tmp_path / "by_value.npy", np.multiply.outer(v, v))
    with pytest.warns(UserWarning, match=r"ordered by operand value .* np.roll\(lut, \(8, 8\), axis=\(0, 1\)\)"):
        read_text_lut(tmp_path / "by_value.npy")
    fixed = np.roll(np.multiply.outer(v, v), (8, 8), axis=(0, 1))
    np.save(tmp_path / "fixed.npy", fixed)
    assert read_text_lut(tmp_path / "fixed.npy").is_exact()
    np.save(tmp_path / "cube.npy", np.zeros((4, 4, 4), dtype=np.int64))
    with pytest.raises(AppMulError, match=r"2-D.*\(4, 4, 4\)"):
        read_text_lut(tmp_path / "cube.npy")
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(AppMulError, match="not a numpy .npy array"):
        read_text_lut(tmp_path / "junk.npy")
    np.save(tmp_path / "u8.npy", exact_lut(8, 8, False, False).astype(np.uint8))  # products wrapped mod 256
    with pytest.raises(AppMulError, match="uint8 cannot hold every 8x8 product .*int32"):
        read_text_lut(tmp_path / "u8.npy")  # imported as an 8x8u design with a worst-case error of 65024
    signed16 = exact_lut(8, 8, True, True).astype(np.int16)  # fits: signed x signed 8x8 products need 16 bits
    np.save(tmp_path / "s16.npy", signed16)
    assert read_text_lut(tmp_path / "s16.npy", signed=True).is_exact()
    with pytest.warns(UserWarning, match="would also have wrapped unsigned products"):
        assert read_text_lut(tmp_path / "s16.npy").is_exact()  # inferred: accepted, the doubt said
    np.save(tmp_path / "s8.npy", exact_lut(4, 4, True, True).astype(np.int8))
    assert read_text_lut(tmp_path / "s8.npy").is_exact()  # a signed 4x4 table fits int8 (-56..64)
    # unsigned products wrapped by int16 were read as an 8sx8u design of MRED 3.9%: they read back exactly mod 2^16
    np.save(tmp_path / "u16.npy", exact_lut(8, 8, False, False).astype(np.int16))
    with pytest.raises(AppMulError, match=r"int16 wrapped unsigned products .* 2\^16 it is 0.0 from an unsigned"):
        read_text_lut(tmp_path / "u16.npy")


def test_mixed_signedness_luts_hex_values_and_number_overflow(tmp_path):
    lut = exact_lut(4, 4, False, True)  # unsigned activation x signed weight
    np.save(tmp_path / "us.npy", lut)
    with pytest.warns(UserWarning, match="read as 4ux4s"):
        m = read_text_lut(tmp_path / "us.npy")
    assert m.widths == (4, 4, False, True) and m.is_exact()
    assert read_text_lut(tmp_path / "us.npy", signed=(False, True)).is_exact()  # told: no guess
    # `a w product` lines: each operand signed when its values are negative
    (tmp_path / "us.txt").write_text("".join(f"{a} {w} {a * w}\n" for a in range(16) for w in range(-8, 8)))
    assert read_text_lut(tmp_path / "us.txt").widths == (4, 4, False, True)
    # hex fields, and a header is a line without numbers (a first data line is not dropped as one)
    (tmp_path / "hex.txt").write_text("# a w p\n" + "".join(f"{a:#x} {w:#x} {a * w:#x}\n" for a in range(4)
                                                            for w in range(4)))
    assert read_text_lut(tmp_path / "hex.txt").is_exact()
    (tmp_path / "half.txt").write_text("0 0 0.5\n" + "".join(f"{a} {w} {a * w}\n" for a in range(4) for w in range(4)
                                                           if (a, w) != (0, 0)))
    with pytest.raises(AppMulError, match="half.txt:1: non-integer field"):
        read_text_lut(tmp_path / "half.txt")
    for text in ("0 0 1e30\n", "0 0 99999999999999999999999\n"):
        (tmp_path / "big.txt").write_text(text)
        with pytest.raises(AppMulError, match="does not fit a 64-bit integer"):
            read_text_lut(tmp_path / "big.txt")
    np.save(tmp_path / "str.npy", np.full((4, 4), "x"))
    with pytest.raises(AppMulError, match="holds integer products; this one's dtype"):
        read_text_lut(tmp_path / "str.npy")


def test_appmul_refuses_what_would_break_a_library_later(tmp_path):
    from fames.appmul.library import Library

    lut = exact_lut(2, 2)
    for kw, match in ((dict(name="a\x00b"), "printable"), (dict(top="../../evil", verilog="module m(); endmodule"),
                                                           "not a plain Verilog module name"),
                      (dict(a_signed="no"), "must be True or False"), (dict(verilog=""), "source text"),
                      (dict(provenance={"f": object()}), "JSON data")):
        args = dict(name="m", a_bits=2, w_bits=2, a_signed=False, w_signed=False, lut=lut) | kw
        with pytest.raises(AppMulError, match=match):
            AppMul(**args)
    m = AppMul("m", np.int8(2), np.int64(2), np.bool_(False), 0, lut, provenance={"seed": np.int64(3)})
    assert type(m.a_bits) is int and m.provenance == {"seed": 3} and m.a_signed is False
    Library([m]).save(tmp_path / "L")
    assert Library.load(tmp_path / "L")["m"].is_exact()
    # an index.json naming Verilog outside the library folder is refused, not read
    import json

    index = json.loads((tmp_path / "L" / "index.json").read_text())
    index["appmuls"][0]["verilog"] = "../secret.v"
    (tmp_path / "secret.v").write_text("module m(); endmodule")
    (tmp_path / "L" / "index.json").write_text(json.dumps(index))
    with pytest.raises(AppMulError, match="outside the library folder"):
        Library.load(tmp_path / "L")


def test_signed_records_written_as_bit_patterns_and_npz_archives_get_their_fix_named(tmp_path):
    (tmp_path / "s.txt").write_text("".join(f"{a} {w} {(a - 16 * (a > 7)) * (w - 16 * (w > 7))}\n"
                                            for a in range(16) for w in range(16)))
    for kw in ({"signed": True}, {"a_bits": 4, "w_bits": 4, "signed": True}):
        with pytest.raises(AppMulError, match=r"signed column\(s\) a/w hold no negative one: bit patterns\?"):
            read_text_lut(tmp_path / "s.txt", **kw)
    np.savez(tmp_path / "l.npz", lut=exact_lut(4, 4))
    with pytest.raises(AppMulError, match=r"\.npz archive holds several arrays: save the one LUT with np.save"):
        read_text_lut(tmp_path / "l.npz")
