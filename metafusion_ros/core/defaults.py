"""The method's settings and their defaults, in one place (no imports: the launch file reads it).

``ALPHA``: the prior interpolation α of eq. 15 (1 = the ML rule of eq. 3, 0 = Bayes);
``TAU``: the meta classifier's threshold τ, a candidate is kept if ``P(TP) >= τ`` (§4);
``FUSION_MODES``: the readings of eq. 14 (spec §5), the first the default: ``'reference'`` the
authors' ``fuse_mask_i`` (every ML class-c segment with ``S_in > 0`` that is not dropped,
agreeing segments included), ``'literal'`` eq. 14 read literally (kept candidates only).
The core, the engine and the node's parameter schema take their defaults from here.
"""
__all__ = ['ALPHA', 'TAU', 'FUSION_MODES', 'FUSION']

ALPHA = 1.0
TAU = 0.5
FUSION_MODES = ('reference', 'literal')
FUSION = FUSION_MODES[0]
