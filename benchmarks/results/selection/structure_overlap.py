"""Diagnostic for docs/methods.md#alignment-rule-search: how much a probe's structure resembles its forget image's.

Wraps ``scripts/run.py`` (same options), stops right after StructGuard's ``prepare`` and prints, over the probe set,
``1 − L_align`` (the cosine measure, :func:`hf_structguard.structure.alignment_loss`) between each probe's ``S_ori``
row and that of the forget image it was made from, the same against another forget image (the part every row
shares), their centred (Pearson) versions, and the same cosine between backbone features.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python benchmarks/results/selection/structure_overlap.py \\
        --output_dir /tmp/overlap --forget_k 64 --save_models false --plots false
"""

import runpy
import sys

from hf_structguard.methods import structguard
from hf_structguard.structure import alignment_loss

prepare = structguard.StructGuard.prepare


def centred(rows):
    return rows - rows.mean(1, keepdim=True)


def report_and_stop(self, model):
    prepare(self, model)
    source = self.probes.source_index.long()
    other = (source + 1) % len(self.forget_images)  # another forget image
    forget_features = structguard.pooled_features(self.original_model, self.forget_images)
    probe_features = structguard.pooled_features(self.original_model, self.probes.images)
    s_forget = self.space.feature_structure(forget_features)

    def mean_cos(a, b):
        return 1 - alignment_loss(a, b, measure="cosine").item()

    print(
        f"STRUCTURE OVERLAP (probe ε {self.probes.config.epsilon}): "
        f"cos(S probe, S source) {mean_cos(self.s_ori, s_forget[source]):.3f}, "
        f"vs another forget image {mean_cos(self.s_ori, s_forget[other]):.3f}; "
        f"centred {mean_cos(centred(self.s_ori), centred(s_forget[source])):.3f} / "
        f"{mean_cos(centred(self.s_ori), centred(s_forget[other])):.3f}; "
        f"features {mean_cos(probe_features, forget_features[source]):.3f}",
        flush=True,
    )
    raise SystemExit(0)


structguard.StructGuard.prepare = report_and_stop
sys.argv = ["scripts/run.py"] + sys.argv[1:]
runpy.run_path("scripts/run.py", run_name="__main__")
