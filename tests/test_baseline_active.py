"""The "latest activity" baseline (active_in_communities): in the user's communities, the
post engaged with most recently first (a bumped thread back on top), a post nobody
engaged with at its creation time; then the rest."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import scipy.sparse as sp

from training.baselines import active_in_communities

# posts:                 p0   p1  p2  p3   p4
POST_COMMUNITY = np.array([0, 0, 1, 0, 1])
CREATED = np.array([10, 50, 40, 30, 60])
LAST_ACTIVE = np.array([90, 50, 95, 70, 60])  # p0 answered at 90 though oldest; p1, p4 never engaged


def test_latest_activity_first_in_my_groups_then_the_rest():
    w = SimpleNamespace(
        ds=SimpleNamespace(post_community=POST_COMMUNITY, post_created_at=CREATED),
        catalogue=np.arange(len(CREATED)),
        state=SimpleNamespace(
            last_active=LAST_ACTIVE, community_weight=sp.csr_matrix(np.array([[1.0, 0.0]], dtype=np.float32))
        ),
    )
    scores = active_in_communities(w)(np.array([0]))[0].astype(np.float32)  # as the evaluation ranks
    order = np.lexsort((np.arange(len(scores)), -scores)).tolist()
    # group 0 by last activity: p0 (90), p3 (70), p1 (50); then group 1's p2 and p4 tie
    # outside (lower row first), though p2 was active last of all
    assert order == [0, 3, 1, 2, 4]
