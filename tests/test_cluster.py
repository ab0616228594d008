"""Connecting to Ray fails fast and says how to fix the address (instead of ray.init retrying for minutes)."""

import pytest

from fames.cluster import connect_ray
from fames.errors import FamesError


def test_an_address_nobody_answers_on_is_refused_quickly():
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'fames[ray]'")
    with pytest.raises(FamesError, match=r"--ray 127.0.0.1:1: no Ray cluster answers there.*ray start --head"):
        connect_ray("127.0.0.1:1")  # refused by the TCP probe, before ray.init (which retries for minutes)
    with pytest.raises(FamesError, match=r"--ray-address 'nohost': give 'auto', 'local' or host:port"):
        connect_ray("nohost", "--ray-address")
