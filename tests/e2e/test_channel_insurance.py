"""Medical-insurance specifics (the common behaviour is in test_payment_channels): the split."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cashier.channels.base import ChannelRefused
from cashier.channels.dev import mock_merchant_configs
from cashier.channels.insurance import InsuranceChannel
from tests.e2e.payments import payment_request, raw_request


@pytest.fixture(scope="module")
def channel_code():
    return "insurance"


@pytest.fixture(scope="module")
def config(live_server):
    return mock_merchant_configs(live_server.settings)["insurance"]


@pytest.mark.parametrize(
    "amount, fund_percent, fund", [(1001, None, 600), (999, 80, 799), (1, None, 0), (200, 0, 0)]
)
async def test_the_amount_is_split_between_fund_and_insured(
    config, mock, web, live_server, amount, fund_percent, fund
):
    if fund_percent is not None:
        await mock.faults(fund_percent=fund_percent)
    channel = InsuranceChannel(config)
    request = payment_request(live_server.base_url, "insurance", amount, payer_id="610102199001011234")
    page = await web.get((await channel.create_payment(request)).data["url"])
    assert page.status_code == 200 and "医保" in page.text
    confirmed = await mock.confirm(request.order_no)
    assert confirmed["insurance_fen"] == fund

    event = await channel.parse_callback(*raw_request((await mock.notifications(request.order_no))[0]))
    state = await channel.query(request.order_no)
    for paid in (event.payment, state):
        assert (paid.amount_fen, paid.insurance_fen, paid.self_pay_fen) == (amount, fund, amount - fund)


async def test_calls_signed_with_another_key_are_refused(config):
    stranger = InsuranceChannel(replace(config, secrets={"hmac_key": "00" * 32}))
    with pytest.raises(ChannelRefused) as refused:
        await stranger.query("ANY")
    assert refused.value.details["code"] == "SIGNATURE_INVALID"
