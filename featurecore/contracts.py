"""Data contracts of the landing zone as Pandera models (events, users, products).

Ingestion validates typed frames against these; rows that fail are quarantined with
the check that failed, never dropped.
"""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series


class EventSchema(pa.DataFrameModel):
    """A typed, in-contract event row."""

    user_id: Series[str] = pa.Field(nullable=False, str_length={"min_value": 1})
    ts: Series[pd.DatetimeTZDtype] = pa.Field(nullable=False, dtype_kwargs={"unit": "ns", "tz": "UTC"})
    event_type: Series[str] = pa.Field(nullable=False, str_length={"min_value": 1})
    event_id: Series[str] | None = pa.Field(nullable=True)
    product_id: Series[str] | None = pa.Field(nullable=True)
    price: Series[float] | None = pa.Field(nullable=True, ge=0)
    quantity: Series[float] | None = pa.Field(nullable=True, ge=0)
    device_type: Series[str] | None = pa.Field(nullable=True)
    referrer: Series[str] | None = pa.Field(nullable=True)
    session_id: Series[str] | None = pa.Field(nullable=True)

    class Config:
        """Pandera options: extra raw columns pass through, and validation does not coerce dtypes."""
        strict = False  # extra raw columns pass through untouched
        coerce = False  # coercion happens before, so failures can be attributed per row


class UserSchema(pa.DataFrameModel):
    """The users dimension: one row per user_id, any attributes."""

    user_id: Series[str] = pa.Field(nullable=False, unique=True, str_length={"min_value": 1})

    class Config:
        """Pandera options: columns beyond the contract pass through (not strict)."""
        strict = False


class ProductSchema(pa.DataFrameModel):
    """The products dimension: one row per product_id; category, brand, price when present."""

    product_id: Series[str] = pa.Field(nullable=False, unique=True, str_length={"min_value": 1})
    category: Series[str] | None = pa.Field(nullable=True)
    brand: Series[str] | None = pa.Field(nullable=True)
    price: Series[float] | None = pa.Field(nullable=True, ge=0)

    class Config:
        """Pandera options: columns beyond the contract pass through (not strict)."""
        strict = False
