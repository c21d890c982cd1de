"""Roles inside a tenant and what each may do."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    OWNER = "owner"  # everything, including users, keys and policy
    OPERATOR = "operator"  # runs campaigns, imports contacts, sends
    ANALYST = "analyst"  # reads audiences and reports; numbers masked
    AUDITOR = "auditor"  # reads the audit log and settings; nothing else


class Permission(StrEnum):
    MANAGE_TENANT = "manage_tenant"
    MANAGE_USERS = "manage_users"
    MANAGE_KEYS = "manage_keys"
    SEND = "send"
    MANAGE_CONTACTS = "manage_contacts"
    READ_CONTACTS = "read_contacts"
    READ_REPORTS = "read_reports"
    READ_AUDIT = "read_audit"
    # Webhook endpoints receive replies with full numbers and hold signing secrets: owner only.
    MANAGE_WEBHOOKS = "manage_webhooks"
    # content: write templates, submit them for review, keep the tenant's word lists;
    # read templates and their review state. Signatures (the brand) need MANAGE_TENANT.
    MANAGE_TEMPLATES = "manage_templates"
    READ_TEMPLATES = "read_templates"


GRANTS: dict[Role, frozenset[Permission]] = {
    Role.OWNER: frozenset(Permission),
    Role.OPERATOR: frozenset(
        {
            Permission.SEND,
            Permission.MANAGE_CONTACTS,
            Permission.READ_CONTACTS,
            Permission.READ_REPORTS,
            Permission.MANAGE_TEMPLATES,
            Permission.READ_TEMPLATES,
        }
    ),
    Role.ANALYST: frozenset(
        {Permission.READ_CONTACTS, Permission.READ_REPORTS, Permission.READ_TEMPLATES}
    ),
    Role.AUDITOR: frozenset({Permission.READ_AUDIT}),
}


def can(role: Role | str, permission: Permission) -> bool:
    return permission in GRANTS[Role(role)]
