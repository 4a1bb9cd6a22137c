"""FinePseudo's own pieces: the non-parametric classifier (Eq. 7-8), the labeled gallery it scores
against, and the rule that turns both encoders' predictions into pseudo-labels (Algorithm 1, Table 6)."""
