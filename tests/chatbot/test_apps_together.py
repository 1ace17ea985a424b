"""The assistant and the recommender as one shop (issue #20): the real recommender service, trained on the default
synthetic data's user ids (``u00017``-style), serves on loopback; the real action server, with the demo's own shop
store (``project/actions/shop.json``), calls it. Known customers get their own lists, anyone else popular items."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from apps.chatbot.config import PROJECT
from apps.recommender.config import RecommenderConfig
from apps.recommender.data import USER, synthetic
from apps.recommender.service import build_app
from apps.recommender.train import fit_bundle
from common import serving
from tests.chatbot.conftest import require_rasa
from tests.chatbot.test_actions import _start_actions, call, texts

SHOP = json.loads((PROJECT / "actions" / "shop.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A tiny recommender trained on the default generator's data, served for real, and an action server using it."""
    require_rasa()
    from apps.chatbot import rasa_env

    data = synthetic(n_users=400, n_items=200, n_clusters=6, mean_activity=25.0, seed=7)
    bundle = fit_bundle(
        data.interactions, "als", {"iterations": 5}, cfg=RecommenderConfig(seed=7, threads=1), item_meta=data.items
    )
    tmp = tmp_path_factory.mktemp("shop")
    with serving.BackgroundServer(build_app(bundle=bundle, refresh_interval_s=None, api_key=None)) as rec:
        # no MLREF_SHOP_STORE: the action server reads the demo's shop.json, the wiring under test
        proc, url = _start_actions({"MLREF_RECOMMENDER_URL": rec.url}, tmp / "actions.log")
        try:
            yield {"actions": url, "users": set(data.interactions[USER])}
        finally:
            rasa_env._stop(proc)


def test_the_shops_customers_are_the_recommenders_users() -> None:
    default_users = set(synthetic(n_users=400, n_items=200, seed=7).interactions[USER])
    for name, record in SHOP["customers"].items():
        assert record["recommender_user"] in default_users, name  # was "17": no such user, so popular items for all


def test_known_customers_get_their_own_lists_and_strangers_popular_items(shop: dict[str, Any]) -> None:
    alice = texts(call(shop["actions"], "action_recommend_products", sender="alice:c1", text="recommend something"))
    bob = texts(call(shop["actions"], "action_recommend_products", sender="bob:c1", text="recommend something"))
    stranger = texts(call(shop["actions"], "action_recommend_products", sender="carol:c1", text="suggest something"))
    anonymous = texts(call(shop["actions"], "action_recommend_products", sender=":c1", text="suggest something"))
    for said in (alice, bob):
        assert said.startswith("Picked for you from what you've bought: Item "), said
    assert alice != bob  # personal: two customers, two lists
    for said in (stranger, anonymous):
        assert said.startswith("I don't know your taste yet, so these are our popular items"), said
    assert stranger == anonymous
