"""Compatibility with torch-gqn's weights: its state dicts, and checkpoints of the other viewpoint order.

model.GQN computes what torch-gqn's GQN computes, with its four gate convolutions of each conv-LSTM
stacked into one (conv_lstm.py) and the two upsampling convolutions named alike. These functions
convert a state dict between the two layouts, exactly, and reorder the viewpoint inputs of weights
trained on DeepMind's 7-d viewpoint order. model.py keeps only the algorithm.
"""

import torch

from dataset.viewpoints import SWAP_SIN_COS


# -- torch-gqn's state dict ----------------------------------------------------------------------

GATES = ("forget", "input", "output", "state")  # torch-gqn's four gate convs, stacked in this order


def from_torch_gqn_state_dict(state):
    """torch-gqn names -> this GQN's: each core's four gate convs become one stacked conv."""
    out = {}
    for name, t in state.items():
        name = name.replace("module.", "", 1) if name.startswith("module.") else name
        head, _, tail = name.rpartition(".core.")
        if head and tail.split(".")[0] in GATES:
            gate, kind = tail.split(".")
            if gate == GATES[0]:
                out[f"{head}.core.gates.{kind}"] = torch.cat(
                    [state_get(state, f"{head}.core.{g}.{kind}") for g in GATES], dim=0)
            continue
        out[name] = t
    return out


def to_torch_gqn_state_dict(state):
    """This GQN's names -> torch-gqn's (the inverse of from_torch_gqn_state_dict)."""
    out = {}
    for name, t in state.items():
        head, _, tail = name.rpartition(".core.gates.")
        if head:
            for g, part in zip(GATES, torch.chunk(t, len(GATES), dim=0)):
                out[f"{head}.core.{g}.{tail}"] = part.clone()
        else:
            out[name] = t
    return out


def state_get(state, name):
    """Look a torch-gqn parameter up with or without DataParallel's 'module.' prefix."""
    return state[name] if name in state else state["module." + name]


def load_torch_gqn_state_dict(model, state, viewpoint_order="torch-gqn"):
    """Load a state dict saved by torch-gqn's GQN (same representation, L and shared_core) into `model`.
    viewpoint_order="deepmind": its weights were trained on DeepMind's 7-d order; they are converted."""
    state = from_torch_gqn_state_dict(state)
    if viewpoint_order == "deepmind":
        state = convert_viewpoint_order(state, model.config)
    elif viewpoint_order != "torch-gqn":
        raise ValueError(f"viewpoint_order is 'torch-gqn' or 'deepmind', not {viewpoint_order!r}")
    model.load_state_dict(state)
    return model


# -- checkpoints trained with DeepMind's viewpoint order -------------------------------------------

# DeepMind's reader gives (x, y, z, sin yaw, cos yaw, sin pitch, cos pitch); this project, as torch-gqn,
# (x, y, z, cos yaw, sin yaw, cos pitch, sin pitch). Input j in one order is input SWAP_SIN_COS[j] in the
# other (dataset/viewpoints.py; the swap is its own inverse).


def convert_viewpoint_order(state, config):
    """A GQN state dict trained on viewpoints in the other 7-d order -> one for this project's order
    (or back: the swap is its own inverse). Every weight that reads v or v_q directly has its
    viewpoint input channels reordered; the model then computes the same function of the same camera."""
    c = {"x_dim": 3, "v_dim": 7, "r_dim": 256, "h_dim": 128, "upsample": "learned", **config}
    if c["v_dim"] != 7:
        raise ValueError("viewpoint order conversion needs 7-d viewpoints")
    h, x_dim, r_dim = c["h_dim"], c["x_dim"], c["r_dim"]
    swap = torch.tensor(SWAP_SIN_COS)

    def reorder(t, dim, start):
        index = torch.arange(t.shape[dim], device=t.device)
        index[start:start + 7] = start + swap.to(t.device)
        return t.index_select(dim, index)

    out = {}
    for name, t in state.items():
        if name in ("phi.conv5.weight", "phi.conv6.weight"):        # input [r, v] (Figure S1)
            t = reorder(t, 1, r_dim)
        elif name == "phi.net.0.weight":                              # pyramid input [v, x]
            t = reorder(t, 1, 0)
        elif name.endswith("upsample_v.weight"):                      # (7 in, 7 out, k, k)
            t = reorder(t, 0, 0)
        elif name.endswith("core.gates.weight") and c["upsample"] == "broadcast":
            # [h | x, v, r | ...], [h | v, r | z]
            start = h + x_dim if name.startswith("inference_core") else h
            t = reorder(t, 1, start)
        out[name] = t
    return out
