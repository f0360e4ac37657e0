"""Detector-based region proposals (paper section 4.1): `strg proposals extract`.

``rpn.py`` holds the proposal model (torchvision's Faster R-CNN R50-FPN, its RPN only);
``extract.py`` runs it over videos into a :class:`strg.data.proposals.ProposalStore`.
"""

from strg.proposals.rpn import DETECTORS, RPNProposer, ScoringRPN, build_rpn_proposer

__all__ = ["DETECTORS", "RPNProposer", "ScoringRPN", "build_rpn_proposer"]
