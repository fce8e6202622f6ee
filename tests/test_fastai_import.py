"""Tests of the fastai checkpoint import (skulmfit/fastai_import.py).

Checkpoints are built by hand, key by key, in each fastai layout (not with skulmfit's own model),
at tiny sizes, so the tests check the name mapping independently of skulmfit's module names.
"""
import argparse
import io
import pickle
import tarfile

import pytest
import torch

from skulmfit.fastai_import import download_wt103, load_fastai
from skulmfit.lm_weights import PretrainedLM, match_embeddings
from skulmfit.model import AWDLSTMConfig
from skulmfit.pretrained import resolve
from skulmfit.tokenizer import SPECIAL_TOKENS

V, E, H, N = 20, 8, 12, 3
V2_SPECIALS = list(SPECIAL_TOKENS)
V1_EARLY_SPECIALS = ["xxunk", "xxpad", "xxbos", "xxfld", "xxmaj", "xxup", "xxrep", "xxwrep"]
V07_SPECIALS = ["_unk_", "_pad_", "xbos", "xfld", "t_up", "tk_rep", "tk_wrep"]
SKULMFIT_KEYS = {"0.encoder.weight", "0.encoder_dp.emb.weight", "1.decoder.weight", "1.decoder.bias"} | {
    f"0.rnns.{i}.{name}" for i in range(N)
    for name in ("weight_hh_l0_raw", "module.weight_ih_l0", "module.bias_ih_l0", "module.bias_hh_l0")}



def vocab(specials, size=V):
    return specials + [f"w{i}" for i in range(size - len(specials))]


def layer_tensors(seed=0, vocab_size=V, emb=E, hidden=H, n_layers=N):
    """Distinct random tensors per logical parameter, by role (not by any layout's names)."""
    g = torch.Generator().manual_seed(seed)
    t = {"emb": torch.randn(vocab_size, emb, generator=g), "bias": torch.randn(vocab_size, generator=g)}
    for i in range(n_layers):
        n_in, n_out = (emb if i == 0 else hidden), (emb if i == n_layers - 1 else hidden)
        t[i, "ih"] = torch.randn(4 * n_out, n_in, generator=g)
        t[i, "hh"] = torch.randn(4 * n_out, n_out, generator=g)
        t[i, "b_ih"] = torch.randn(4 * n_out, generator=g)
        t[i, "b_hh"] = torch.randn(4 * n_out, generator=g)
        t[i, "stale_hh"] = torch.randn(4 * n_out, n_out, generator=g)
    return t


def v2_state(t, n_layers=N):
    sd = {"0.encoder.weight": t["emb"], "0.encoder_dp.emb.weight": t["emb"]}
    for i in range(n_layers):
        sd[f"0.rnns.{i}.weight_hh_l0_raw"] = t[i, "hh"]
        sd[f"0.rnns.{i}.module.weight_ih_l0"] = t[i, "ih"]
        sd[f"0.rnns.{i}.module.bias_ih_l0"] = t[i, "b_ih"]
        sd[f"0.rnns.{i}.module.bias_hh_l0"] = t[i, "b_hh"]
    sd["1.decoder.weight"] = t["emb"]
    sd["1.decoder.bias"] = t["bias"]
    return sd


def v1_state(t, n_layers=N):
    sd = v2_state(t, n_layers)
    for i in range(n_layers):
        sd[f"0.rnns.{i}.module.weight_hh_l0"] = t[i, "stale_hh"]
    return sd


def v07_state(t, n_layers=N):
    sd = {"0.encoder.weight": t["emb"], "0.encoder_with_dropout.embed.weight": t["emb"]}
    for i in range(n_layers):
        sd[f"0.rnns.{i}.module.weight_ih_l0"] = t[i, "ih"]
        sd[f"0.rnns.{i}.module.weight_hh_l0_raw"] = t[i, "hh"]
        sd[f"0.rnns.{i}.module.bias_ih_l0"] = t[i, "b_ih"]
        sd[f"0.rnns.{i}.module.bias_hh_l0"] = t[i, "b_hh"]
    sd["1.decoder.weight"] = t["emb"]
    return sd


def write(folder, weights, itos, weights_name="lstm_fwd.pth", itos_name="itos_wt103.pkl", with_opt=False):
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"model": weights, "opt": {}} if with_opt else weights, folder / weights_name)
    with open(folder / itos_name, "wb") as f:
        pickle.dump(itos, f)
    return folder / weights_name


def assert_rnns_match(lm, t, n_layers=N):
    for i in range(n_layers):
        assert torch.equal(lm.state_dict[f"0.rnns.{i}.weight_hh_l0_raw"], t[i, "hh"])
        assert torch.equal(lm.state_dict[f"0.rnns.{i}.module.weight_ih_l0"], t[i, "ih"])
        assert torch.equal(lm.state_dict[f"0.rnns.{i}.module.bias_ih_l0"], t[i, "b_ih"])
        assert torch.equal(lm.state_dict[f"0.rnns.{i}.module.bias_hh_l0"], t[i, "b_hh"])


def assert_runs(lm: PretrainedLM):
    model = lm.build().eval()
    ids = torch.tensor([[2, 9, 10, 11, 12], [2, 13, 14, 15, 16]]) % lm.config.vocab_size
    with torch.no_grad():
        logits = model(ids)[0]
    assert logits.shape == (2, 5, lm.config.vocab_size)
    assert torch.isfinite(logits).all()


# ----------------------------------------------------------------------------- layouts

@pytest.mark.parametrize("with_opt", [False, True])
def test_v2_folder_loads_every_tensor_by_name(tmp_path, with_opt):
    t = layer_tensors()
    write(tmp_path, v2_state(t), vocab(V2_SPECIALS), with_opt=with_opt)
    lm = load_fastai(tmp_path)
    assert set(lm.state_dict) == SKULMFIT_KEYS
    assert lm.config.sizes() == {"vocab_size": V, "emb_size": E, "hidden_size": H, "n_layers": N}
    assert lm.itos == vocab(V2_SPECIALS)
    assert_rnns_match(lm, t)
    for key in ("0.encoder.weight", "0.encoder_dp.emb.weight", "1.decoder.weight"):
        assert torch.equal(lm.state_dict[key], t["emb"])
    assert torch.equal(lm.state_dict["1.decoder.bias"], t["bias"])
    assert all(v.dtype == torch.float32 for v in lm.state_dict.values())
    assert lm.backwards is False
    assert lm.card["layout"] == "fastai-v2"
    assert lm.card["weights_file"] == "lstm_fwd.pth" and lm.card["itos_file"] == "itos_wt103.pkl"
    assert_runs(lm)


def test_weights_file_with_explicit_itos_path_and_fp16(tmp_path):
    t = layer_tensors(seed=1)
    weights = write(tmp_path / "w", {k: v.half() for k, v in v2_state(t).items()}, [], with_opt=True)
    itos_file = tmp_path / "vocab.pkl"
    itos_file.write_bytes(pickle.dumps(vocab(V2_SPECIALS)))
    lm = load_fastai(weights, itos_path=itos_file)
    assert lm.state_dict["0.rnns.1.weight_hh_l0_raw"].dtype == torch.float32
    assert torch.equal(lm.state_dict["0.rnns.1.weight_hh_l0_raw"], t[1, "hh"].half().float())
    assert lm.card["itos_file"] == "vocab.pkl"


def test_v1_ignores_stale_weight_hh_in_favour_of_raw(tmp_path):
    t = layer_tensors(seed=2)
    write(tmp_path, v1_state(t), vocab(V2_SPECIALS), weights_name="lstm_wt103.pth", with_opt=True)
    lm = load_fastai(tmp_path)
    assert lm.card["layout"] == "fastai-v1"
    assert set(lm.state_dict) == SKULMFIT_KEYS
    assert_rnns_match(lm, t)
    assert not torch.equal(lm.state_dict["0.rnns.1.weight_hh_l0_raw"], t[1, "stale_hh"])
    assert_runs(lm)


def test_v07_maps_names_infers_hidden_and_zero_decoder_bias(tmp_path):
    hidden = 10  # not a default anywhere: must come from the shapes
    t = layer_tensors(seed=3, hidden=hidden)
    itos = vocab(V07_SPECIALS)
    write(tmp_path, v07_state(t), itos, weights_name="fwd_wt103.h5")
    lm = load_fastai(tmp_path)
    assert lm.card["layout"] == "fastai-v0.7"
    assert lm.config.hidden_size == hidden and lm.config.n_layers == N and lm.config.emb_size == E
    assert set(lm.state_dict) == SKULMFIT_KEYS
    assert_rnns_match(lm, t)
    assert torch.equal(lm.state_dict["1.decoder.bias"], torch.zeros(lm.config.vocab_size))
    # Legacy specials renamed and moved; missing xxeos / xxmaj get the mean row.
    assert lm.itos[:9] == list(SPECIAL_TOKENS)
    assert lm.itos[9:] == itos[7:]
    assert lm.config.vocab_size == len(lm.itos) == V + 2
    emb = lm.state_dict["0.encoder.weight"]
    for old, new in zip(V07_SPECIALS, ["xxunk", "xxpad", "xxbos", "xxfld", "xxup", "xxrep", "xxwrep"]):
        assert torch.equal(emb[lm.itos.index(new)], t["emb"][itos.index(old)])
    for token in ("xxeos", "xxmaj"):
        assert torch.allclose(emb[lm.itos.index(token)], t["emb"].mean(0))
    assert torch.equal(emb[9:], t["emb"][7:])
    assert lm.state_dict["1.decoder.weight"] is emb and lm.state_dict["0.encoder_dp.emb.weight"] is emb
    assert lm.card["added_special_tokens"] == ["xxeos", "xxmaj"]
    assert lm.card["renamed_tokens"]["t_up"] == "xxup"
    assert_runs(lm)


def test_reordering_moves_embedding_and_bias_rows_together(tmp_path):
    t = layer_tensors(seed=4)
    itos = vocab(V1_EARLY_SPECIALS)  # no xxeos, xxmaj/xxup/xxrep/xxwrep in another order
    write(tmp_path, v2_state(t), itos)
    lm = load_fastai(tmp_path)
    assert lm.itos[:9] == list(SPECIAL_TOKENS) and lm.itos[9:] == itos[8:]
    emb, bias = lm.state_dict["0.encoder.weight"], lm.state_dict["1.decoder.bias"]
    for new_row, token in enumerate(lm.itos):
        if token == "xxeos":
            assert torch.allclose(emb[new_row], t["emb"].mean(0))
            assert torch.allclose(bias[new_row], t["bias"].mean())
        else:
            assert torch.equal(emb[new_row], t["emb"][itos.index(token)])
            assert torch.equal(bias[new_row], t["bias"][itos.index(token)])
    assert_runs(lm)


def test_duplicate_tokens_keep_the_first_row(tmp_path):
    t = layer_tensors(seed=5)
    itos = vocab(V2_SPECIALS, V - 3) + ["xxfake"] * 2 + ["w0"]  # fastai pads with repeated xxfake
    write(tmp_path, v2_state(t), itos)
    lm = load_fastai(tmp_path)
    assert lm.itos == itos[:V - 2]
    assert lm.config.vocab_size == V - 2 and lm.card["dropped_duplicates"] == 2
    assert torch.equal(lm.state_dict["0.encoder.weight"], t["emb"][:V - 2])
    assert torch.equal(lm.state_dict["1.decoder.bias"], t["bias"][:V - 2])
    assert_runs(lm)


# ----------------------------------------------------------------------------- folders

def test_folder_with_forward_and_backward_picks_by_direction(tmp_path):
    fwd, bwd = layer_tensors(seed=6), layer_tensors(seed=7)
    write(tmp_path, v2_state(fwd), vocab(V2_SPECIALS), weights_name="lstm_fwd.pth")
    write(tmp_path, v2_state(bwd), vocab(V2_SPECIALS), weights_name="lstm_bwd.pth")
    forward, backward = load_fastai(tmp_path), load_fastai(tmp_path, backwards=True)
    assert torch.equal(forward.state_dict["0.rnns.0.weight_hh_l0_raw"], fwd[0, "hh"])
    assert torch.equal(backward.state_dict["0.rnns.0.weight_hh_l0_raw"], bwd[0, "hh"])
    assert not forward.backwards and backward.backwards
    assert backward.card["weights_file"] == "lstm_bwd.pth"


def test_v07_folder_ignores_encoder_only_files(tmp_path):
    fwd, bwd = layer_tensors(seed=8), layer_tensors(seed=9)
    itos = vocab(V07_SPECIALS)
    write(tmp_path, v07_state(fwd), itos, weights_name="fwd_wt103.h5")
    write(tmp_path, v07_state(bwd), itos, weights_name="bwd_wt103.h5")
    for name, t in (("fwd_wt103_enc.h5", fwd), ("bwd_wt103_enc.h5", bwd)):
        torch.save({k[2:]: v for k, v in v07_state(t).items() if k.startswith("0.")}, tmp_path / name)
    lm = load_fastai(tmp_path, backwards=True)
    assert lm.card["weights_file"] == "bwd_wt103.h5" and lm.backwards
    assert_rnns_match(lm, bwd)


def test_direction_mismatch_and_encoder_only_are_refused(tmp_path):
    t = layer_tensors()
    write(tmp_path / "a", v2_state(t), vocab(V2_SPECIALS), weights_name="lstm_fwd.pth")
    with pytest.raises(ValueError, match="forward model"):
        load_fastai(tmp_path / "a", backwards=True)
    with pytest.raises(ValueError, match="forward model"):
        load_fastai(tmp_path / "a" / "lstm_fwd.pth", backwards=True)
    write(tmp_path / "b", {k[2:]: v for k, v in v07_state(t).items() if k.startswith("0.")},
          vocab(V07_SPECIALS), weights_name="fwd_wt103_enc.h5")
    with pytest.raises(ValueError, match="encoder-only"):
        load_fastai(tmp_path / "b")
    with pytest.raises(ValueError, match="encoder-only"):
        load_fastai(tmp_path / "b" / "fwd_wt103_enc.h5")


def test_missing_or_ambiguous_itos_is_refused(tmp_path):
    write(tmp_path, v2_state(layer_tensors()), vocab(V2_SPECIALS), itos_name="a.pkl")
    (tmp_path / "b.pkl").write_bytes(pickle.dumps(vocab(V2_SPECIALS)))
    with pytest.raises(ValueError, match="exactly one itos"):
        load_fastai(tmp_path)
    assert load_fastai(tmp_path, itos_path=tmp_path / "b.pkl").card["itos_file"] == "b.pkl"


def test_pickled_objects_beside_the_weights_are_read_without_running_them(tmp_path):
    weights = tmp_path / "lstm_fwd.pth"
    write(tmp_path, v2_state(layer_tensors()), vocab(V2_SPECIALS))
    torch.save({"model": v2_state(layer_tensors()), "opt": argparse.Namespace(lr=0.1)}, weights)
    assert load_fastai(tmp_path).card["layout"] == "fastai-v2"
    assert load_fastai(weights).card["layout"] == "fastai-v2"
    assert load_fastai(weights, allow_code_execution=True).card["layout"] == "fastai-v2"


def test_resolve_routes_fastai_folders_here(tmp_path):
    write(tmp_path, v2_state(layer_tensors()), vocab(V2_SPECIALS))
    lm = resolve(tmp_path)
    assert lm.card["layout"] == "fastai-v2" and lm.config.vocab_size == V


# ----------------------------------------------------------------------------- errors

def test_unknown_key_is_listed(tmp_path):
    sd = v2_state(layer_tensors())
    sd["0.rnns.0.extra_gate"] = torch.zeros(3)
    write(tmp_path, sd, vocab(V2_SPECIALS))
    with pytest.raises(ValueError, match=r"unknown keys \['0\.rnns\.0\.extra_gate'\]"):
        load_fastai(tmp_path)


def test_missing_key_is_listed(tmp_path):
    sd = v2_state(layer_tensors())
    del sd["0.rnns.2.module.bias_hh_l0"]
    write(tmp_path, sd, vocab(V2_SPECIALS))
    with pytest.raises(ValueError, match=r"missing keys \['0\.rnns\.2\.module\.bias_hh_l0'\]"):
        load_fastai(tmp_path)


def test_v07_without_raw_matrix_is_missing_a_key(tmp_path):
    sd = v07_state(layer_tensors())
    del sd["0.rnns.1.module.weight_hh_l0_raw"]
    write(tmp_path, sd, vocab(V07_SPECIALS), weights_name="fwd_wt103.h5")
    with pytest.raises(ValueError, match=r"fastai-v0\.7.*missing keys \['0\.rnns\.1\.module\.weight_hh_l0_raw'\]"):
        load_fastai(tmp_path)


def test_wrong_shape_names_key_expected_and_found(tmp_path):
    sd = v1_state(layer_tensors())
    sd["0.rnns.1.module.weight_ih_l0"] = torch.zeros(4 * H, H + 1)
    write(tmp_path, sd, vocab(V2_SPECIALS))
    expected = r"'0\.rnns\.1\.module\.weight_ih_l0' has shape \(48, 13\), expected \(48, 12\)"
    with pytest.raises(ValueError, match=expected):
        load_fastai(tmp_path)


def test_non_contiguous_layers_are_refused(tmp_path):
    sd = {k.replace("0.rnns.2.", "0.rnns.3."): v for k, v in v2_state(layer_tensors()).items()}
    write(tmp_path, sd, vocab(V2_SPECIALS))
    with pytest.raises(ValueError, match=r"numbered 0\.\.n-1, found \[0, 1, 3\]"):
        load_fastai(tmp_path)


def test_untied_decoder_is_refused(tmp_path):
    sd = v2_state(layer_tensors())
    sd["1.decoder.weight"] = sd["1.decoder.weight"] + 1
    write(tmp_path, sd, vocab(V2_SPECIALS))
    with pytest.raises(ValueError, match="untied"):
        load_fastai(tmp_path)


def test_itos_length_mismatch(tmp_path):
    write(tmp_path, v2_state(layer_tensors()), vocab(V2_SPECIALS, V - 1))
    with pytest.raises(ValueError, match=f"{V - 1} tokens but the embedding .* has {V} rows"):
        load_fastai(tmp_path)


@pytest.mark.parametrize("itos", [{"xxunk": 0}, vocab(V2_SPECIALS)[:-1] + [7]])
def test_itos_must_be_a_list_of_str(tmp_path, itos):
    write(tmp_path, v2_state(layer_tensors()), itos)
    with pytest.raises(ValueError, match="list of str"):
        load_fastai(tmp_path)


def test_itos_pickle_cannot_run_code(tmp_path):
    write(tmp_path, v2_state(layer_tensors()), argparse.Namespace(itos=vocab(V2_SPECIALS)))
    with pytest.raises(ValueError, match="refusing to load argparse.Namespace"):
        load_fastai(tmp_path)


# ----------------------------------------------------------------------------- vocabulary transfer

def test_match_embeddings_on_a_loaded_checkpoint(tmp_path):
    t = layer_tensors(seed=10)
    write(tmp_path, v2_state(t), vocab(V2_SPECIALS))
    lm = load_fastai(tmp_path)
    new_itos = list(SPECIAL_TOKENS) + ["w3", "brand-new", "w0"]
    state = match_embeddings(lm.state_dict, lm.itos, new_itos)
    emb, bias = state["0.encoder.weight"], state["1.decoder.bias"]
    assert emb.shape == (len(new_itos), E)
    assert torch.equal(emb[9], t["emb"][lm.itos.index("w3")])
    assert torch.equal(emb[11], t["emb"][lm.itos.index("w0")])
    assert torch.allclose(emb[10], t["emb"].mean(0))
    assert torch.allclose(bias[10], t["bias"].mean())
    assert state["1.decoder.weight"] is emb
    config = AWDLSTMConfig(**{**lm.config.sizes(), "vocab_size": len(new_itos)})
    assert_runs(PretrainedLM(config, new_itos, state))


# ----------------------------------------------------------------------------- archive (no network)

def _tgz(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_download_wt103_unpacks_a_cached_archive(tmp_path):
    staging = tmp_path / "staging"
    write(staging, v2_state(layer_tensors()), vocab(V2_SPECIALS), weights_name="lstm_bwd.pth")
    cache = tmp_path / "cache"
    cache.mkdir()
    _tgz(cache / "wt103-bwd.tgz", {f"wt103-bwd/{f.name}": f.read_bytes() for f in staging.iterdir()})
    folder = download_wt103(cache, backwards=True)  # the archive is there: nothing is fetched
    assert (folder / "lstm_bwd.pth").is_file()
    assert load_fastai(folder, backwards=True).backwards
    assert download_wt103(cache, backwards=True) == folder


def test_download_wt103_refuses_path_traversal(tmp_path):
    _tgz(tmp_path / "wt103-fwd.tgz", {"../evil.pth": b"x", "itos.pkl": b"y"})
    with pytest.raises(ValueError, match="outside the target folder"):
        download_wt103(tmp_path)
    assert not (tmp_path.parent / "evil.pth").exists()
    assert not (tmp_path / "wt103-fwd").exists()
