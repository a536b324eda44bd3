"""What an adversary would run against Frosted's noisy activations: the privacy measurement library.

Threat model (Kerckhoffs): the attacker knows the architecture, the head's weights and the noise profile's
mu and sigma, sees only noisy activations of the victims, and owns public face photos disjoint from them.

Modules: `canvas` (images at the model input), `observe` (noisy activations, k-frame averaging),
`reid` (dlib face recogniser), `metrics` (SSIM/PSNR, does the detector still fire), `inversion`
(optimisation, no training data), `decoder` (learned decoder), `report` (both attacks, one dict, a grid).

Nothing in the product (facesplit, edge_agent, cloud_tail) imports this package, and it imports only
facesplit's public model code: the attack must see no more than the attacker would.
"""
