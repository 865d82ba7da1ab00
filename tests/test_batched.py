"""Heavy passes (evaluation, statistics fits, relevance training, probes) embed a bounded number of samples at once."""

import pandas as pd
import pytest

from mmcl_lab.backbones.binding import AlignmentModel
from mmcl_lab.batches import in_chunks
from mmcl_lab.config import apply_overrides
from mmcl_lab.evaluate import evaluate
from mmcl_lab.methods import Context, create_method
from mmcl_lab.run import run_stream

from conftest import head

LIMIT = 16  # below every ci task's test and training set (about 45 and 75 samples)


@pytest.mark.parametrize("method", ["comm", "slca", "finetune"])
def test_no_pass_embeds_more_than_the_batch_size(method, ci_cfg, ci_stream, ci_backbone, tmp_path, monkeypatch):
    real = AlignmentModel.embed
    largest = []

    def bounded(self, x, space, prompts=None):
        largest.append(len(x))
        assert len(x) <= LIMIT, f"a pass of {len(x)} samples at once"
        return real(self, x, space, prompts)

    monkeypatch.setattr(AlignmentModel, "embed", bounded)
    cfg = apply_overrides(ci_cfg, {"method.name": method, "train.batch_size": LIMIT, "train.eval_batch_size": LIMIT})
    run_stream(cfg, tmp_path / "run", head(ci_stream, 5), backbone=ci_backbone)
    assert max(largest) == LIMIT  # the bound was reached, so the passes really were cut


def test_chunked_evaluation_gives_the_whole_set_numbers(ci_cfg, ci_stream, ci_backbone):
    stream = head(ci_stream, 3)
    model = ci_backbone.model(stream)
    method = create_method(apply_overrides(ci_cfg, {"method.name": "finetune"}).method)
    method.setup(model, Context.replay(stream, 2, backbone=ci_backbone))
    whole, chunked = (evaluate(model, method, stream, 2, "cpu", size) for size in (10_000, 7))
    for a, b in zip(whole, chunked):
        pd.testing.assert_frame_equal(pd.DataFrame(a), pd.DataFrame(b), atol=1e-6, rtol=0)


def test_in_chunks_covers_every_row_once():
    import torch

    x = torch.arange(23.0).unsqueeze(1)
    assert torch.equal(in_chunks(lambda b: b * 2, x, 5, torch.device("cpu")), x * 2)
    with pytest.raises(ValueError, match="chunk size must be at least 1"):
        in_chunks(lambda b: b, x, 0, torch.device("cpu"))
