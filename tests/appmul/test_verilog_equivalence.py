"""Every generated LUT equals the gate-level simulation of its own Verilog, synthesized by Yosys."""

import numpy as np
import pytest

from fames.appmul.core import AppMul
from fames.appmul.families import build_family
from fames.appmul.importers import import_design
from fames.appmul.library import Library
from fames.cli import main
from fames.errors import AppMulError
from fames.hw.synth import synthesize

WIDTHS = [(n, n) for n in range(2, 9)] + [(8, 4), (4, 8), (3, 5)]


def _verify(ms: list[AppMul]) -> None:
    """One Yosys run: a wrapper instantiates every design on shared inputs; compare each output slice."""
    a_bits, w_bits = ms[0].a_bits, ms[0].w_bits
    n = a_bits + w_bits
    wrapper = [
        f"module all_designs(input [{a_bits - 1}:0] a, input [{w_bits - 1}:0] w, output [{n * len(ms) - 1}:0] y);"
    ]
    wrapper += [f"  {m.top} u{k}(.a(a), .w(w), .y(y[{(k + 1) * n - 1}:{k * n}]));" for k, m in enumerate(ms)]
    wrapper.append("endmodule")
    source = "\n".join(m.verilog for m in ms) + "\n" + "\n".join(wrapper) + "\n"
    netlist = synthesize(source, "all_designs", None)
    av = np.arange(1 << a_bits).repeat(1 << w_bits)
    wv = np.tile(np.arange(1 << w_bits), 1 << a_bits)
    bits = netlist.outputs["y"]
    words = netlist.simulate_words({"a": av, "w": wv})[0]
    for k, m in enumerate(ms):
        y = np.zeros(av.size, dtype=np.int64)
        for b in range(n):
            packed = words[bits[k * n + b]]
            y |= np.unpackbits(packed.view(np.uint8), bitorder="little")[: av.size].astype(np.int64) << b
        if m.signed:
            y = np.where(y >= (1 << (n - 1)), y - (1 << n), y)
        assert np.array_equal(y.reshape(m.lut.shape), m.lut), f"{m.name}: LUT differs from its Verilog"


@pytest.mark.parametrize("signed", [False, True], ids=["u", "s"])
@pytest.mark.parametrize("a_bits, w_bits", WIDTHS, ids=[f"{a}x{w}" for a, w in WIDTHS])
def test_every_generated_lut_equals_its_verilog(a_bits, w_bits, signed):
    ms = build_family("all", a_bits, w_bits, signed)
    assert all(m.verilog and m.structural for m in ms)
    _verify(ms)


def test_cli_build_writes_verified_library(tmp_path):
    out = tmp_path / "lib"
    assert (
        main(
            [
                "lib",
                "build",
                "--family",
                "trunc",
                "--bits",
                "4",
                "4",
                "--bits",
                "8",
                "4",
                "--signedness",
                "both",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    lib = Library.load(out)
    assert {m.signature() for m in lib} == {"4x4u", "4x4s", "8x4u", "8x4s"}
    for key in {m.widths for m in lib}:
        _verify(lib.select(*key))


def test_import_verilog_with_other_port_names(tmp_path):
    v = tmp_path / "mymul.v"
    v.write_text(
        "module mymul(input [3:0] A, input [2:0] B, output [6:0] O);\n  assign O = (A * B) & 7'b1111110;\nendmodule\n"
    )
    m = import_design(v, 4, 3, ports=("A", "B", "O"))
    want = np.multiply.outer(np.arange(16), np.arange(8)) & ~1
    assert np.array_equal(m.lut, want)
    _verify([m])  # the re-emitted structural Verilog reproduces the LUT
    s = tmp_path / "smul.v"
    s.write_text(
        "module smul(input signed [2:0] a, input signed [2:0] w, output signed [5:0] y);\n"
        "  assign y = a * w;\nendmodule\n"
    )
    ms = import_design(s, 3, 3, signed=True)
    assert ms.is_exact()
    blif = tmp_path / "and2.blif"
    blif.write_text(
        ".model and2\n.inputs a[0] a[1] w[0] w[1]\n.outputs y[0] y[1] y[2] y[3]\n"
        ".names a[0] w[0] y[0]\n11 1\n.names y[1]\n.names y[2]\n.names y[3]\n.end\n"
    )
    mb = import_design(blif, 2, 2)
    assert np.array_equal(mb.lut, np.multiply.outer(np.arange(4) & 1, np.arange(4) & 1))


def test_import_finds_the_top_module_when_it_is_not_named_after_the_file(tmp_path):
    v = tmp_path / "designs.v"
    v.write_text(
        "// module decoy(input x); (a comment does not define or use a module)\n"
        "module and1(input a, input b, output c); assign c = a & b; endmodule\n"
        "module approx_mul(input [2:0] x, input [2:0] y, output [5:0] p);\n"
        "  wire low; and1 u0(.a(x[0]), .b(y[1]), .c(low));\n"
        "  assign p = ((x * y) & 6'b111110) | {5'b0, low};\n"
        "endmodule\n"
    )
    m = import_design(v, 3, 3, ports=None)
    x, y = np.arange(8)[:, None], np.arange(8)[None, :]
    assert np.array_equal(m.lut, (x * y & ~1) | (x & (y >> 1) & 1))
    two = tmp_path / "two.v"
    two.write_text("module m1(input [1:0] a, input [1:0] w, output [3:0] y); assign y = a * w; endmodule\n"
                   "module m2(input [1:0] a, input [1:0] w, output [3:0] y); assign y = a + w; endmodule\n")
    with pytest.raises(AppMulError, match=r"defines modules \['m1', 'm2'\].*--top"):
        import_design(two, 2, 2)
    assert import_design(two, 2, 2, top="m1").is_exact()
    with pytest.raises(AppMulError, match=r"no module 'm3'.*\['m1', 'm2'\]"):
        import_design(two, 2, 2, top="m3")
    # a multiplier and its testbench: the testbench (no ports, instantiated by none) was taken as the top and the
    # import blamed its $display for "sequential logic"
    tb = tmp_path / "with_tb.v"
    tb.write_text("module mymul(input [1:0] a, input [1:0] w, output [3:0] y); assign y = a * w; endmodule\n"
                  "module tb; reg [1:0] a, w; wire [3:0] y; mymul u(.a(a), .w(w), .y(y));\n"
                  "  initial begin a = 1; w = 2; #1 $display(\"%d\", y); end\nendmodule\n")
    assert import_design(tb, 2, 2).is_exact()
    tb.write_text(tb.read_text() + two.read_text())
    with pytest.raises(AppMulError, match=r"\['tb'\] have no ports \(a testbench\?\).*\['mymul', 'm1', 'm2'\]"):
        import_design(tb, 2, 2)


def test_import_reads_include_files_next_to_the_design(tmp_path):
    d = tmp_path / "a folder"  # a space in the path, as users have
    d.mkdir()
    (d / "widths.vh").write_text("`define W 3\n")
    v = d / "inc_mul.v"
    v.write_text('`include "widths.vh"\n'
                 "module inc_mul(input [`W-1:0] a, input [`W-1:0] w, output [2*`W-1:0] y); assign y = a * w | 1;\n"
                 "endmodule\n")
    m = import_design(v, 3, 3, ports=None)
    assert np.array_equal(m.lut, np.multiply.outer(np.arange(8), np.arange(8)) | 1)


def test_import_takes_widths_and_signedness_from_the_port_declarations(tmp_path):
    s = tmp_path / "smul.v"
    s.write_text("module smul(input signed [3:0] a, input signed [2:0] b, output signed [6:0] y);\n"
                 "  assign y = a * b;\nendmodule\n")
    m = import_design(s, ports=None)  # widths 4x3 and two's complement, as declared
    assert (m.a_bits, m.w_bits, m.a_signed, m.w_signed) == (4, 3, True, True)
    assert m.is_exact()
    # read as unsigned, the bits of a signed product would import as a wildly wrong "unsigned multiplier"
    with pytest.raises(AppMulError, match=r"declared signed.*--signed"):
        import_design(s, 4, 3, signed=False, ports=None)
    mixed = tmp_path / "mixed.v"
    mixed.write_text("module mixed(input [3:0] a, input signed [3:0] w, output signed [7:0] y);\n"
                     "  assign y = $signed({1'b0, a}) * w;\nendmodule\n")
    mm = import_design(mixed, ports=None)
    assert (mm.a_signed, mm.w_signed) == (False, True)
    assert np.array_equal(mm.lut, np.multiply.outer(np.arange(16), np.r_[0:8, -8:0]))
    # it is costed against an exact multiplier of the same mixed signedness (costing failed: no such reference)
    from fames.hw.cost import cost_library
    from fames.hw.synthetic import default_synthetic_liberty

    (costed,) = cost_library([mm], default_synthetic_liberty(), progress=False, n_vectors=256)
    assert costed.cost.relative["area"] == pytest.approx(1.0, abs=0.1)  # an exact design against the exact one
    # plain ports read as two's complement on request (EvoApproxLib's signed designs declare no `signed`)
    plain = tmp_path / "plain.v"
    plain.write_text("module plain(input [2:0] a, input [2:0] w, output [5:0] y);\n"
                     "  assign y = $signed(a) * $signed(w);\nendmodule\n")
    assert import_design(plain, signed=True, ports=None).is_exact()
    v, sv = np.arange(8), np.r_[0:4, -4:0]
    off = np.abs(np.multiply.outer(sv, sv) % 64 - np.multiply.outer(v, v)).mean()  # 6-bit patterns read unsigned
    with pytest.warns(UserWarning, match=rf"off by {off:.1f} on average; read with two's complement, by 0.0: import "
                                         r"it with --signed \(signed=True\)"):
        assert not import_design(plain, ports=None).is_exact()  # the user is told, not left with a wrong table
    # one operand in two's complement behind plain ports: was taken as unsigned without a word
    plain.write_text("module plain(input [2:0] a, input [2:0] w, output [5:0] y);\n"
                     "  assign y = $signed(a) * $signed({1'b0, w});\nendmodule\n")
    with pytest.warns(UserWarning, match=r"activation operand in two's complement, by 0.0: .* --signed-only a"):
        import_design(plain, ports=None)
    assert import_design(plain, signed=(True, False), ports=None).is_exact()


def test_import_reads_files_that_start_with_a_byte_order_mark(tmp_path):
    v = tmp_path / "bom.v"  # as Windows editors save UTF-8
    v.write_bytes(b"\xef\xbb\xbfmodule bom(input [1:0] a, input [1:0] w, output [3:0] y);\r\n"
                  b"  assign y = a * w;\r\nendmodule\r\n")
    assert import_design(v, ports=None).is_exact()


def test_import_finds_marked_escaped_and_labelled_tops_gzip_and_ports_by_name(tmp_path):
    import gzip

    mul = "(input [1:0] a, input [1:0] w, output [3:0] y); assign y = a * w; endmodule"
    cases = {
        "attr.v": f"module add(input [1:0] a, input [1:0] w, output [3:0] y); assign y = a + w; endmodule\n"
                  f"(* top *) module mymul{mul}\n",
        "esc.v": f"module \\mul-esc {mul}\n",
        "label.sv": "module ha(input x, input y, output s); assign s = x ^ y; endmodule : ha\n"
                    "module top2(input [1:0] a, input [1:0] w, output [3:0] y);\n  wire s; ha u(.x(a[0]), .y(w[0]), "
                    ".s(s));\n  assign y = a * w;\nendmodule : top2\n",
        "ha.v": "module ha(input x, input y, output s); assign s = x ^ y; endmodule\n"  # a helper named as the file
                "module mul2(input [1:0] a, input [1:0] w, output [3:0] y);\n  wire s; ha u(.x(a[0]), .y(w[0]), "
                ".s(s));\n  assign y = a * w;\nendmodule\n",
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        m = import_design(tmp_path / name)
        assert m.is_exact() and m.name == name.split(".")[0], name
    assert import_design(tmp_path / "esc.v", top="mul-esc").is_exact()
    # a gzipped design, and ports named a/w are taken by name whatever their order in the module header
    (tmp_path / "order.v.gz").write_bytes(gzip.compress(
        b"module order(input [2:0] w, input [1:0] a, output [4:0] y); assign y = a * w + (a & 1); endmodule\n"))
    m = import_design(tmp_path / "order.v.gz")
    assert (m.name, m.a_bits, m.w_bits) == ("order", 2, 3)
    a, w = np.arange(4)[:, None], np.arange(8)[None, :]
    assert np.array_equal(m.lut, a * w + (a & 1))
