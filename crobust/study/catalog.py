"""The paper's headline claims (docs/paper.md §5) and which study tests each, for the reproduction index."""

CLAIMS = {
    "C1": "neuron compressibility (group lasso / row sparsity) lowers ℓ∞ RA and RA/SA while SA stays roughly flat",
    "C2": "spectral compressibility (low rank / nuclear norm) lowers ℓ2 RA and RA/SA",
    "C3": "at fixed Frobenius norm, nuclear-norm compressibility alone makes RA collapse",
    "C4": "mechanism: ‖W‖/‖W‖_F rises, perturbations align with top singular directions, ‖z_adv − z‖/‖z‖ rises",
    "C5": "the Corollary 3.3 bound correlates with the empirical robustness gap (ρ ≈ 0.947)",
    "C6": "the same trend whatever the source of compressibility (regulariser, low rank, learning dynamics)",
    "C7": "under PGD adversarial training RA rises but still falls with compressibility",
    "C8": "compressible pretrained encoders transfer to lower RA under a linear probe",
    "C9": "compressibility, not Frobenius scale, raises vulnerability to universal perturbations; UAE training lowers β",
    "C10": "sparsity-regularised fine-tuning of pretrained backbones (ViT, CLIP) lowers robustness",
    "C11": "ResNet-18 α = 0.1 vs 0: no better accuracy, more graceful filter pruning; mitigations help",
}

# Claims no study tests yet, and the study that will.
PLANNED: dict[str, str] = {}

# Parts of a claim that no study here can test, and why: the index prints them beside the verdicts of the parts that
# are tested, so a reader never takes a partial check for the whole claim.
NOT_COVERED = {
    "C10": "CLIP zero-shot on ImageNet-1k, Swin and the ImageNet WideResNet-101-2: their pretrained weights and "
           "ImageNet-1k / Flickr30k cannot be downloaded here, and no crobust model loads CLIP or Swin weights",
}
