"""Dataset fingerprints: the content hash ignores how the data is split, the split hash does not, and both see a
single changed interaction or feature value."""

from __future__ import annotations

import dataclasses

from modalrec.data import SyntheticConfig, make_synthetic, split_interactions
from modalrec.data.fingerprint import data_sha256, fingerprint, split_sha256


def test_content_and_split_hashes() -> None:
    data = make_synthetic(SyntheticConfig(n_users=40, n_items=30, n_interactions=300, seed=0))
    fp = fingerprint(data)
    assert fp["interactions"] == {"train": data.train.nnz, "val": data.val.nnz, "test": data.test.nnz}
    assert fp["users"] == 40 and fp["items"] == 30 and set(fp["modalities"]) == set(data.features)
    assert fingerprint(data) == fp  # deterministic
    # the same interactions split another way: same content, another split
    coo = (data.train + data.val + data.test).tocoo()
    tr, va, te = split_interactions(coo.row, coo.col, 40, 30, "ratio", (0.8, 0.1, 0.1), seed=5)
    resplit = dataclasses.replace(data, train=tr, val=va, test=te)
    assert data_sha256(resplit) == fp["data_sha256"] and split_sha256(resplit) != fp["split_sha256"]
    # one interaction moved to another item changes the content
    train = data.train.tolil()
    u, i = train.nonzero()[0][0], train.nonzero()[1][0]
    j = next(j for j in range(30) if (data.train + data.val + data.test)[u, j] == 0)
    train[u, i], train[u, j] = 0, 1
    moved = dataclasses.replace(data, train=train.tocsr())
    assert data_sha256(moved) != fp["data_sha256"]
    # so does one feature value
    name = sorted(data.features)[0]
    feats = {**data.features, name: data.features[name].copy()}
    feats[name][3, 2] += 1.0
    assert data_sha256(dataclasses.replace(data, features=feats)) != fp["data_sha256"]
