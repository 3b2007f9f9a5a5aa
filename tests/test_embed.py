import numpy as np

from curate.embed import encode, encode_cached


def test_encode_cached_encodes_each_text_once(tmp_path):
    # 600 texts: with raw 16-byte digests about two keys would end in NUL, which numpy's bytes dtype drops.
    texts = [f"row number {i} about topic {i % 7}" for i in range(600)]
    first, encoded, cache = encode_cached(texts, tmp_path)
    assert encoded == 600 and cache.exists()
    again, encoded_again, _ = encode_cached(texts[::-1] + ["a new text"], tmp_path)
    assert encoded_again == 1
    assert np.allclose(again[:600], first[::-1], atol=1e-6)
    assert np.allclose(again[600], encode(["a new text"])[0], atol=1e-5)
