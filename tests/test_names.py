from peftlab import names


def test_each_name_is_spelled_once():
    """Two constants of one value would be two homes for one name a run writes."""
    values = [v for k, v in vars(names).items() if k.isupper() and isinstance(v, str)]
    repeated = sorted({v for v in values if values.count(v) > 1})
    assert not repeated, repeated
