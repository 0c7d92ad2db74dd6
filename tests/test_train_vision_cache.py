"""The frozen-vision feature cache (``--vision_cache``): same logits as the tower, the tower not run again on a
hit, keys that follow the vision weights and the preprocessing, refusal when any of the tower trains."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from PIL import Image

from qwenvl_train.model import QwenVLForCausalLM
from qwenvl_train.model.image_processing import preprocess_image
from qwenvl_train.training.prepare import PreparationError
from qwenvl_train.training.run import main, train
from qwenvl_train.training.vision_cache import VisionFeatureCache, check_vision_cacheable
from train_fixtures import cpu_args, logged_losses, write_dataset


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> QwenVLForCausalLM:
    return QwenVLForCausalLM.from_pretrained(tiny_model_dir).eval()


def count_calls(module: torch.nn.Module) -> list[int]:
    """A one-element list counting ``module``'s forward calls from now on."""
    calls = [0]

    def hook(*_: object) -> None:
        calls[0] += 1

    module.register_forward_hook(hook)
    return calls


def image_batch(model: QwenVLForCausalLM, n_images: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` with one image span per row and matching random pixels."""
    config = model.config
    span = [config.image_start_id] + [config.image_start_id + 2] * config.n_queries + [config.image_end_id]
    rows = [[100, 200] + span + [300 + k, 400] for k in range(n_images)]
    generator = torch.Generator().manual_seed(0)
    size = model.transformer.visual.image_size
    return torch.tensor(rows), torch.randn(n_images, 3, size, size, generator=generator)


def test_cached_features_give_the_same_logits_and_a_second_run_does_not_run_the_tower(
    model: QwenVLForCausalLM, tmp_path: Path
) -> None:
    input_ids, pixels = image_batch(model)
    calls = count_calls(model.transformer.visual)
    with torch.no_grad():
        expected = model(input_ids=input_ids, pixel_values=pixels).logits
        assert calls[0] == 1

        first = VisionFeatureCache(tmp_path, model.transformer.visual)
        features = first.features(pixels)
        assert calls[0] == 2 and (first.hits, first.misses) == (0, 2)
        assert len(list(tmp_path.glob("*/*.safetensors"))) == 2
        assert torch.equal(model(input_ids=input_ids, image_features=features).logits, expected)

        later_run = VisionFeatureCache(tmp_path, model.transformer.visual)
        reread = later_run.features(pixels)
        assert calls[0] == 2 and (later_run.hits, later_run.misses) == (2, 0)
        assert torch.equal(model(input_ids=input_ids, image_features=reread).logits, expected)


def test_a_damaged_file_is_computed_again(model: QwenVLForCausalLM, tmp_path: Path) -> None:
    _, pixels = image_batch(model, n_images=1)
    cache = VisionFeatureCache(tmp_path, model.transformer.visual)
    good = cache.features(pixels)
    cache.path(cache.key(pixels[0])).write_bytes(b"not safetensors")
    assert torch.equal(cache.features(pixels), good) and cache.misses == 2
    assert not list(tmp_path.glob("*/.*.tmp"))  # nothing left aside


def test_writers_of_the_same_key_never_expose_a_partial_file(
    model: QwenVLForCausalLM, tmp_path: Path
) -> None:
    """Ranks (here threads, each with its own cache object) writing the same image at once: every read finds the
    whole file or none, and nothing is left aside."""
    _, pixels = image_batch(model, n_images=1)
    caches = [VisionFeatureCache(tmp_path, model.transformer.visual) for _ in range(3)]
    key = caches[0].key(pixels[0])
    expected = caches[0].features(pixels)[0]
    caches[0].path(key).unlink()

    def write(cache: VisionFeatureCache) -> None:
        for _ in range(20):
            cache._write(key, expected)

    def read(cache: VisionFeatureCache) -> list[bool]:
        return [
            torch.equal(found, expected)
            for found in (cache._read(key) for _ in range(200))
            if found is not None
        ]

    with ThreadPoolExecutor(3) as pool:
        writers = [pool.submit(write, cache) for cache in caches[:2]]
        reads = pool.submit(read, caches[2]).result()
        for writer in writers:
            writer.result()
    assert all(reads)
    assert torch.equal(caches[2]._read(key), expected)
    assert [p.name for p in tmp_path.glob("*/*")] == [f"{key}.safetensors"]


def test_key_follows_vision_weights_and_image_size_only(tiny_model_dir: Path, tmp_path: Path) -> None:
    model = QwenVLForCausalLM.from_pretrained(tiny_model_dir)
    image = Image.new("RGB", (70, 50), (200, 30, 40))
    pixels = preprocess_image(image, 56)
    cache = VisionFeatureCache(tmp_path, model.transformer.visual)
    key = cache.key(pixels)
    assert cache.key(preprocess_image(image, 56)) == key
    assert cache.key(preprocess_image(image, 28)) != key
    assert cache.key(preprocess_image(Image.new("RGB", (70, 50), (200, 30, 41)), 56)) != key

    with torch.no_grad():
        model.lm_head.weight[0, 0] += 1.0  # not part of the tower: same key
        assert VisionFeatureCache(tmp_path, model.transformer.visual).key(pixels) == key
        model.transformer.visual.attn_pool.kv_proj.weight[0, 0] += 1e-3
        assert VisionFeatureCache(tmp_path, model.transformer.visual).key(pixels) != key


def test_refused_when_any_of_the_tower_trains(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    data = write_dataset(tmp_path / "data", n_samples=2, text_only=False)
    # --tune full trains the resampler unless --freeze_resampler.
    argv = cpu_args(tiny_model_dir, data, tmp_path / "out", "--vision_cache", str(tmp_path / "cache"))
    assert main(argv) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("qwenvl-train:")]
    assert "Traceback" not in err and len(lines) == 1
    assert lines[0].startswith(
        "qwenvl-train: --vision_cache needs a frozen vision tower, but transformer.visual."
    )
    assert "attn_pool" in lines[0]

    model = QwenVLForCausalLM.from_pretrained(tiny_model_dir)
    model.requires_grad_(False)
    check_vision_cacheable(model)  # all frozen: accepted
    model.transformer.visual.conv1.weight.requires_grad_(True)
    with pytest.raises(PreparationError, match=r"transformer\.visual\.conv1\.weight trains"):
        check_vision_cacheable(model)


def test_lora_training_with_the_cache_matches_the_tower_and_reuses_it(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    data = write_dataset(tmp_path / "data", n_samples=4, text_only=False)
    cache_dir = tmp_path / "cache"
    lora = ["--tune", "lora", "--lora_dropout", "0", "--num_train_epochs", "2"]
    plain = train(cpu_args(tiny_model_dir, data, tmp_path / "plain", *lora))
    cached = train(
        cpu_args(tiny_model_dir, data, tmp_path / "cached", *lora, "--vision_cache", str(cache_dir))
    )
    assert (cached.vision_cache.misses, cached.vision_cache.hits) == (4, 4)
    assert len(list(cache_dir.glob("*/*.safetensors"))) == 4
    assert logged_losses(cached) == logged_losses(plain)

    workers = ("--dataloader_num_workers", "1")  # pixels from a worker process, cache in the main one
    again = train(
        cpu_args(tiny_model_dir, data, tmp_path / "again", *lora, *workers, "--vision_cache", str(cache_dir))
    )
    assert (again.vision_cache.misses, again.vision_cache.hits) == (0, 8)
    assert logged_losses(again) == logged_losses(plain)
