"""The stages of FinePseudo (paper Algorithm 1), one module each."""
