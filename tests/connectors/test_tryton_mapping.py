"""Canonical <-> Tryton mapping that needs no server."""

from __future__ import annotations

from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import pytest

from canonical import BillingType, InvoiceLine, LegalEntity, Money, Project
from connectors.errors import ValidationFailed
from connectors.tryton import mapping


@pytest.mark.parametrize(
    ("identifier", "tax_id"),
    [
        ({"type": "gb_vat", "code": "980 7806 84", "code_compact": "980780684"}, "GB980780684"),
        ({"type": "eu_vat", "code": "DE136695976", "code_compact": "DE136695976"}, "DE136695976"),
        ({"type": "us_ein", "code": "04-2103594", "code_compact": "042103594"}, "04-2103594"),
        ({"type": None, "code": "12345", "code_compact": "12345"}, "12345"),
        (None, None),
    ],
)
def test_tax_ids_read_back_the_way_invoices_write_them(
    identifier: dict[str, Any] | None, tax_id: str | None
) -> None:
    assert mapping.tax_id_from_identifier(identifier) == tax_id


def test_project_comment_carries_key_budget_and_opportunity() -> None:
    project = Project(
        id="prj-1",
        name="Rollout",
        customer_id="acct-1",
        legal_entity_code="NW-UK",
        currency="GBP",
        budget=Money.of("120000", "GBP"),
        billing_type=BillingType.TIME_AND_MATERIALS,
        start_date=date(2026, 11, 2),
        opportunity_id="006ABC",
    )
    comment = mapping.project_comment(project, "otp:sf:006ABC:create_project")
    assert comment.splitlines() == [
        "q2c-key: otp:sf:006ABC:create_project",
        "q2c-project: prj-1",
        "q2c-budget: 120000.00 GBP",
        "q2c-contract-value: 120000.00 GBP",
        "q2c-opportunity: 006ABC",
    ]
    budget = mapping.label_value(comment, mapping.BUDGET_LABEL)
    assert budget is not None and mapping.parse_money(budget) == Money.of("120000", "GBP")
    # Nothing is rounded away: a budget finer than the minor unit is kept as given.
    assert mapping.format_money(Money.of("10.005", "GBP")) == "10.005 GBP"


def test_task_comment_carries_role_and_billing_type() -> None:
    comment = mapping.task_comment("Consultant", BillingType.MILESTONE)
    assert comment.splitlines() == ["q2c-role: Consultant", "q2c-billing: milestone"]
    assert mapping.task_billing_type(comment) is BillingType.MILESTONE
    # A task made before q2c recorded billing types bills its time.
    assert mapping.task_billing_type("q2c-role: Consultant") is BillingType.TIME_AND_MATERIALS
    with pytest.raises(ValidationFailed) as raised:
        mapping.task_billing_type("q2c-billing: barter")
    assert raised.value.field == "billing_type"


def _address(**values: Any) -> dict[str, Any]:
    row = {"id": 1, "street": "1 Dock Road", "city": "London", "postal_code": "E14 5AB"}
    row |= {"country.": {"code": "GB"}, "invoice": False, "sequence": 1}
    return row | values


def test_customer_puts_the_invoice_address_first_and_skips_bad_emails() -> None:
    uk = LegalEntity(code="NW-UK", name="Northwind Consulting Ltd", country="GB", currency="GBP")
    customer = mapping.to_customer(
        party_id=7,
        name="Globex",
        legal_entity=uk,
        currency="GBP",
        addresses=[
            _address(id=1, sequence=1),
            _address(id=2, street="Unit 4\nTrafford Park", city="Manchester", invoice=True),
        ],
        tax_id=None,
        net_days=30,
        mechanisms=[
            {"id": 1, "type": "email", "value": "not an email", "name": None, "invoice": True},
            {"id": 2, "type": "phone", "value": "+44 20 7946 0000", "name": None},
            {"id": 3, "type": "email", "value": "ap@globex.example", "name": None, "invoice": 1},
        ],
        external_ref=None,
    )
    assert [(a.street, a.street2, a.city) for a in customer.addresses] == [
        ("Unit 4", "Trafford Park", "Manchester"),
        ("1 Dock Road", None, "London"),
    ]
    assert [(c.name, c.email, c.role) for c in customer.contacts] == [
        ("Globex", "ap@globex.example", "billing")
    ]
    assert customer.id == "tryton-party:7"
    with pytest.raises(ValidationFailed) as caught:
        mapping.to_customer(
            party_id=7,
            name="Globex",
            legal_entity=uk,
            currency="GBP",
            addresses=[_address(**{"country.": None})],
            tax_id=None,
            net_days=30,
            mechanisms=[],
            external_ref="sf:001",
        )
    assert caught.value.field == "addresses"


def _invoice_line(quantity: str, price: str, rate: str = "0.20") -> InvoiceLine:
    return InvoiceLine(
        description="Consulting",
        quantity=Decimal(quantity),
        unit_price=Money.of(price, "GBP"),
        tax_rate=Decimal(rate),
    )


@pytest.mark.parametrize(
    ("quantity", "price", "sent"),
    [
        # Tryton's product is q2c's net: the line goes as it is.
        ("12.25", "157.50", (12.25, Decimal("157.50"), "Consulting")),
        ("1", "-100.00", (1.0, Decimal("-100.00"), "Consulting")),
        ("0.3333", "150", (0.3333, Decimal("150"), "Consulting")),  # 49.995 rounds up either way
        # Half a penny on an even digit: Tryton would say 0.12, q2c says 0.13.
        ("0.5", "0.25", (1.0, Decimal("0.13"), "Consulting (0.5 x 0.25)")),
        # A price finer than Tryton keeps.
        ("2", "10.00005", (1.0, Decimal("20.00"), "Consulting (2 x 10.00005)")),
    ],
)
def test_invoice_lines_go_so_that_tryton_multiplies_to_q2c_net(
    quantity: str, price: str, sent: tuple[float, Decimal, str]
) -> None:
    line = _invoice_line(quantity, price)
    values = mapping.invoice_line_values(line)
    assert values == sent
    sent_quantity, sent_price, _ = values
    # Tryton: Decimal(str(quantity)) x unit price, rounded half to even.
    product = Decimal(str(sent_quantity)) * sent_price
    assert product.quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN) == line.net.amount


def test_expected_taxes_group_like_tryton_by_tax_and_sign() -> None:
    lines = [
        _invoice_line("12.25", "157.50"),  # tax 385.88
        _invoice_line("7.75", "140"),  # tax 217.00
        _invoice_line("1", "-100"),  # tax -20.00, a credit-side group of its own
        _invoice_line("3.25", "141", rate="0.10"),  # 45.825: q2c says 45.83
    ]
    assert mapping.expected_taxes(lines, [20, 20, 20, 10]) == {
        (20, True): Decimal("602.88"),
        (20, False): Decimal("-20.00"),
        (10, True): Decimal("45.83"),
    }


def test_keys_in_descriptions_read_back() -> None:
    key = mapping.line_key("tti:prj-1:book", "te-1")
    batch, _, entry = key.partition(".")
    assert batch == mapping.batch_key("tti:prj-1:book") and len(entry) == 16
    described = mapping.tag_description("Workshop", key)
    assert mapping.split_description(described) == ("Workshop", key)
    assert mapping.batch_pattern("tti:prj-1:book") == f"%[q2c:{batch}.%"
    # Lines tagged before batch keys existed still read back.
    assert mapping.split_description("Old [q2c:0123456789abcdef01234567]") == (
        "Old",
        "0123456789abcdef01234567",
    )
    text = mapping.payment_description("pi_3MtwBw", "tti:prj-1:pay")
    assert mapping.payment_key(text) == "tti:prj-1:pay"
    assert mapping.payment_key("a payment someone booked by hand") is None
