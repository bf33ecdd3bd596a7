def test_tiny_encoder_loads(tiny_encoder_dir):
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(tiny_encoder_dir)
    tok = AutoTokenizer.from_pretrained(tiny_encoder_dir)
    out = model(**tok(["a claim about cells"], return_tensors="pt"))
    assert out.last_hidden_state.shape[-1] == 32
