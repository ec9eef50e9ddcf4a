"""Dataset layouts -> :class:`medseg.data.sources.common.Dataset`: MSD, nnU-Net, case lists,
glob patterns; ``discover`` tells them apart.
"""
