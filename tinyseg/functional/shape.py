"""Placeholder: being written."""


def center_crop(*args, **kwargs):
    raise NotImplementedError('center_crop is being written')


def concat(*args, **kwargs):
    raise NotImplementedError('concat is being written')


def pad(*args, **kwargs):
    raise NotImplementedError('pad is being written')
