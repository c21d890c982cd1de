"""Tracking's typed errors."""

from __future__ import annotations

from hongyan.errors import Conflict, NotFound, ValidationFailed


class CouponPoolNotFound(NotFound):
    code = "coupon_pool_not_found"
    message_zh = "找不到该优惠券池"
    message_en = "No such coupon pool"


class CouponPoolExhausted(Conflict):
    code = "coupon_pool_exhausted"
    message_zh = "优惠券池中的券码不足"
    message_en = "The coupon pool has not enough codes left"


class CouponPoolExists(Conflict):
    code = "coupon_pool_exists"
    message_zh = "同名的优惠券池已存在"
    message_en = "A coupon pool with this name exists"


class TrackingInvalid(ValidationFailed):
    code = "tracking_invalid"
