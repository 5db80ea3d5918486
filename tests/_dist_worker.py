"""Worker of tests/test_distributed.py: a tiny StructGuard run under ``accelerate launch`` (2 CPU processes).

Two runs: structguard (projector, importance, checkpoints; fixed length) and neggrad on a single-class forget
set (reaches forget accuracy 0, so the stopping decision is exercised). For each run ``<name>`` every rank writes
``<name>-rank{r}.safetensors`` (model parameters and buffers; for structguard also importance and S_ori)
and ``<name>-rank{r}.json`` (stopping outcome, per-step forget accuracy) to the folder given as argument.
"""

import json
import os
import sys

from _unlearning_helpers import tiny_model, tiny_problem
from safetensors.torch import save_file

from hf_structguard.trainer import UnlearningConfig, UnlearningTrainer


def run(out_dir: str, name: str, single_class: bool = False, **overrides) -> None:
    forget_images, forget_labels, probes, anchors = tiny_problem()
    if single_class:  # every forget sample labelled 0: gradient ascent reaches A_f = 0 within a few steps
        forget_labels = forget_labels.zero_()
    args = UnlearningConfig(
        output_dir=os.path.join(out_dir, name),
        per_device_train_batch_size=8,
        forget_batch_size=4,
        importance_num_samples=32,
        disable_tqdm=True,
        **overrides,
    )
    trainer = UnlearningTrainer(tiny_model(), args, forget_images, forget_labels, probes, anchors=anchors)
    trainer.train()
    rank = trainer.args.process_index
    state = {f"model.{k}": v.detach().contiguous() for k, v in trainer.model.state_dict().items()}
    state.update({f"method.{k}": v.contiguous() for k, v in trainer.method.state_dict().items()})
    if getattr(trainer.method, "s_ori", None) is not None:
        state["s_ori"] = trainer.method.s_ori.contiguous()
    save_file(state, os.path.join(out_dir, f"{name}-rank{rank}.safetensors"))
    result = trainer.unlearning_result.to_dict()
    result["world_size"] = trainer.args.world_size
    result["forget_acc"] = [entry["forget_acc"] for entry in trainer.state.log_history if "forget_acc" in entry]
    with open(os.path.join(out_dir, f"{name}-rank{rank}.json"), "w") as handle:
        json.dump(result, handle)


def main(out_dir: str) -> None:
    # a fixed length (no stop) so that the checkpoints are predictable; neggrad exercises the stop
    run(
        out_dir, "structguard", num_train_epochs=2, learning_rate=0.05, save_strategy="steps", save_steps=2,
        stop_at_zero_forget_accuracy=False,
    )  # fmt: skip
    run(out_dir, "neggrad", single_class=True, method="neggrad", num_train_epochs=6, learning_rate=0.05)


if __name__ == "__main__":
    main(sys.argv[1])
