"""The method's settings and their defaults, in one place (no imports: the launch file reads it).

``ALPHA``: the prior interpolation α of eq. 15 (1 = the ML rule of eq. 3, 0 = Bayes);
``TAU``: the meta classifier's threshold τ, a candidate is kept if ``P(TP) >= τ`` (§4);
``FUSION_MODES``: the readings of eq. 14 (spec §5), the first the default: ``'reference'`` the
authors' ``fuse_mask_i`` (every ML class-c segment with ``S_in > 0`` that is not dropped,
agreeing segments included), ``'literal'`` eq. 14 read literally (kept candidates only),
``'support'`` the kept candidates plus each agreeing segment's Bayes extent grown into its ML
extent through pixels where the network supports c (``core.fusion.supported_extent``);
``SUPPORT``: that support, ``p_c >= SUPPORT * max_{y != c} p_y`` (c at least half as probable
as the Bayes winner; not fitted to any data, docs/meta.md "Where the mIoU goes").
The core, the engine and the node's parameter schema take their defaults from here.
"""
__all__ = ['ALPHA', 'TAU', 'FUSION_MODES', 'FUSION', 'SUPPORT']

ALPHA = 1.0
TAU = 0.5
FUSION_MODES = ('reference', 'literal', 'support')
FUSION = FUSION_MODES[0]
SUPPORT = 0.5
