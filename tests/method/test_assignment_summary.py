"""The one-line summary of an assignment spec that reports print."""

from fames.method.assignment import describe_spec


def test_describe_spec_counts_groups_and_names_the_control_variate():
    assert describe_spec("trunc_k4_8x8s") == "trunc_k4_8x8s"
    comp = {"granularity": "layer", "appmuls": ["roup_p1r0"],
            "compensation": {"method": "rank1", "fit": "calibrated", "phi": list(range(256))}}
    assert describe_spec(comp) == "roup_p1r0 + control variate (rank1, calibrated)"
    filt = {"granularity": "filter", "appmuls": ["exact", "a", "b"], "index": [2, 0, 2, 2, 0]}
    assert describe_spec(filt) == "5 filters: b x3, exact x2"  # unused "a" left out, most used first
    kern = {"granularity": "kernel", "appmuls": ["exact", "a"], "index": [[0, 1], [1, 1], [1, 0]]}
    assert describe_spec(kern) == "6 kernels: a x4, exact x2"

