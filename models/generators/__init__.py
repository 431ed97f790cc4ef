"""Makers of aligned fakes: the FLUX.2 tiny autoencoder rebuilt in Keras (``taesd``) and a zoo of small simulated
generators (``zoo``). Each turns a real photo into a copy that differs from it only by a decoder's traces."""
