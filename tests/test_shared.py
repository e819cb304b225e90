from pathlib import Path

from peftlab.config import ModelConfig
from peftlab.shared import Shared


def test_a_model_loads_once_and_gives_way_to_another(tiny_llama: Path, tiny_bloom: Path):
    shared = Shared()
    llama = ModelConfig(name_or_path=str(tiny_llama))
    first = shared.model(llama)
    assert shared.model(ModelConfig(name_or_path=str(tiny_llama))) is first  # equal settings
    bloom = shared.model(ModelConfig(name_or_path=str(tiny_bloom)))
    assert bloom is not first and shared.model(ModelConfig(name_or_path=str(tiny_bloom))) is bloom
    assert shared.model(llama) is not first  # one model held at a time: loaded again


def test_a_measurement_is_made_once_per_key():
    shared, made = Shared(), []

    def measure(value):
        return lambda: made.append(value) or value

    assert shared.measured("a", measure(1)) == 1
    assert shared.measured("a", measure(2)) == 1
    assert shared.measured("b", measure(3)) == 3
    assert made == [1, 3]
    assert Shared().measured("a", measure(4)) == 4  # another process's, or another test's
