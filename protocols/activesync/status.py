"""The status codes EAS clients act on, one IntEnum per family.

Pass a member straight to an element builder (`E("Provision:Status", ProvisionStatus.OK)`):
the builder writes its number. Names follow MS-ASCMD / MS-ASPROV; where a command reuses
the common codes (MS-ASCMD 2.2.2) from 14.0 on, it takes a `CommonStatus` member.
"""

from __future__ import annotations

from enum import IntEnum


class CommonStatus(IntEnum):
    """MS-ASCMD 2.2.2: statuses every command may return in its top-level Status (14.0+)."""

    SUCCESS = 1
    INVALID_CONTENT = 101
    INVALID_WBXML = 102
    INVALID_XML = 103
    INVALID_DATETIME = 104
    INVALID_COMBINATION_OF_IDS = 105
    INVALID_IDS = 106
    INVALID_MIME = 107
    DEVICE_ID_MISSING_OR_INVALID = 108
    DEVICE_TYPE_MISSING_OR_INVALID = 109
    SERVER_ERROR = 110
    SERVER_ERROR_RETRY_LATER = 111
    ACTIVE_DIRECTORY_ACCESS_DENIED = 112
    MAILBOX_QUOTA_EXCEEDED = 113
    MAILBOX_SERVER_OFFLINE = 114
    SEND_QUOTA_EXCEEDED = 115
    MESSAGE_RECIPIENT_UNRESOLVED = 116
    MESSAGE_REPLY_NOT_ALLOWED = 117
    MESSAGE_PREVIOUSLY_SENT = 118
    MESSAGE_HAS_NO_RECIPIENT = 119
    MAIL_SUBMISSION_FAILED = 120
    MESSAGE_REPLY_FAILED = 121
    ATTACHMENT_IS_TOO_LARGE = 122
    USER_HAS_NO_MAILBOX = 123
    USER_CANNOT_BE_ANONYMOUS = 124
    USER_PRINCIPAL_COULD_NOT_BE_FOUND = 125
    USER_DISABLED_FOR_SYNC = 126
    USER_ON_NEW_MAILBOX_CANNOT_SYNC = 127
    USER_ON_LEGACY_MAILBOX_CANNOT_SYNC = 128
    DEVICE_IS_BLOCKED_FOR_THIS_USER = 129
    ACCESS_DENIED = 130
    ACCOUNT_DISABLED = 131
    SYNC_STATE_NOT_FOUND = 132
    SYNC_STATE_LOCKED = 133
    SYNC_STATE_CORRUPT = 134
    SYNC_STATE_ALREADY_EXISTS = 135
    SYNC_STATE_VERSION_INVALID = 136
    COMMAND_NOT_SUPPORTED = 137
    VERSION_NOT_SUPPORTED = 138
    DEVICE_NOT_FULLY_PROVISIONABLE = 139
    REMOTE_WIPE_REQUESTED = 140
    LEGACY_DEVICE_ON_STRICT_POLICY = 141
    DEVICE_NOT_PROVISIONED = 142
    POLICY_REFRESH = 143
    INVALID_POLICY_KEY = 144
    EXTERNALLY_MANAGED_DEVICES_NOT_ALLOWED = 145
    NO_RECURRENCE_IN_CALENDAR = 146
    UNEXPECTED_ITEM_CLASS = 147
    REMOTE_SERVER_HAS_NO_SSL = 148
    INVALID_STORED_REQUEST = 149
    ITEM_NOT_FOUND = 150
    TOO_MANY_FOLDERS = 151
    NO_FOLDERS_FOUND = 152
    ITEMS_LOST_AFTER_MOVE = 153
    FAILURE_IN_MOVE_OPERATION = 154
    MOVE_COMMAND_DISALLOWED_FOR_NON_PERSISTENT_MOVE_ACTION = 155
    MOVE_COMMAND_INVALID_DESTINATION_FOLDER = 156
    AVAILABILITY_TOO_MANY_RECIPIENTS = 160
    AVAILABILITY_DL_LIMIT_REACHED = 161
    AVAILABILITY_TRANSIENT_FAILURE = 162
    AVAILABILITY_FAILURE = 163
    BODY_PART_PREFERENCE_TYPE_NOT_SUPPORTED = 164
    DEVICE_INFORMATION_REQUIRED = 165
    INVALID_ACCOUNT_ID = 166
    ACCOUNT_SEND_DISABLED = 167
    IRM_FEATURE_DISABLED = 168
    IRM_TRANSIENT_ERROR = 169
    IRM_PERMANENT_ERROR = 170
    IRM_INVALID_TEMPLATE_ID = 171
    IRM_OPERATION_NOT_PERMITTED = 172
    NO_PICTURE = 173
    PICTURE_TOO_LARGE = 174
    PICTURE_LIMIT_REACHED = 175
    BODY_PART_CONVERSATION_TOO_LARGE = 176
    MAXIMUM_DEVICES_REACHED = 177


class ProvisionStatus(IntEnum):
    """MS-ASPROV 2.2.2.54.2: Provision/Status (plus the common codes 139-145, 165)."""

    SUCCESS = 1
    PROTOCOL_ERROR = 2
    SERVER_ERROR = 3


class PolicyStatus(IntEnum):
    """MS-ASPROV 2.2.2.54.1: Policy/Status in a response."""

    SUCCESS = 1
    NO_POLICY = 2
    UNKNOWN_POLICY_TYPE = 3
    POLICY_DATA_CORRUPT = 4
    WRONG_POLICY_KEY = 5


class ClientPolicyStatus(IntEnum):
    """MS-ASPROV 2.2.2.54.1: Policy/Status in an acknowledgement (what the device did)."""

    APPLIED = 1
    PARTIALLY_APPLIED = 2  # at least the PIN was enabled
    NOT_APPLIED = 3
    EXTERNALLY_MANAGED = 4  # provisioned by a third party


class WipeStatus(IntEnum):
    """MS-ASPROV 2.2.2.54.3: RemoteWipe/Status (and AccountOnlyRemoteWipe) from the client."""

    WIPED = 1
    FAILED = 2


class SettingsStatus(IntEnum):
    """MS-ASCMD 2.2.3.177.14: Settings/Status and the Status of each Settings block."""

    SUCCESS = 1
    PROTOCOL_ERROR = 2
    ACCESS_DENIED = 3
    SERVER_UNAVAILABLE = 4
    INVALID_ARGUMENTS = 5
    CONFLICTING_ARGUMENTS = 6
    DENIED_BY_POLICY = 7


class ValidateCertStatus(IntEnum):
    """MS-ASCMD 2.2.3.177.18: ValidateCert/Status (global) and Certificate/Status."""

    SUCCESS = 1
    PROTOCOL_ERROR = 2
    SIGNATURE_NOT_VALIDATED = 3
    UNTRUSTED_SOURCE = 4  # the chain does not end at a trusted root
    CHAIN_NOT_CORRECT = 5
    NOT_VALID_FOR_SIGNING = 6
    EXPIRED = 7  # or not yet valid
    CHAIN_TIME_INVALID = 8
    USED_INCORRECTLY = 9
    INFORMATION_INCORRECT = 10
    CHAIN_USED_INCORRECTLY = 11
    EMAIL_MISMATCH = 12
    REVOKED = 13
    REVOCATION_SERVER_UNAVAILABLE = 14
    CHAIN_CERTIFICATE_REVOKED = 15
    REVOCATION_UNKNOWN = 16
    SERVER_ERROR = 17


class ResolveRecipientsStatus(IntEnum):
    """MS-ASCMD 2.2.3.177.11: ResolveRecipients/Status and Response/Status."""

    SUCCESS = 1  # Response: exactly one recipient resolved
    AMBIGUOUS = 2  # Response: several matches, all returned
    AMBIGUOUS_PARTIAL = 3  # Response: more matches than MaxAmbiguousRecipients
    UNRESOLVED = 4
    PROTOCOL_ERROR = 5  # global
    SERVER_ERROR = 6  # global


class CertificateRetrievalStatus(IntEnum):
    """MS-ASCMD 2.2.3.177.11: Recipient/Certificates/Status."""

    SUCCESS = 1
    NO_VALID_CERTIFICATE = 7
    CERTIFICATE_LIMIT_REACHED = 8


class AutodiscoverError(IntEnum):
    """MS-ASCMD 2.2.3.57: Autodiscover Response/Error/ErrorCode."""

    INVALID_REQUEST = 600
    SCHEMA_NOT_AVAILABLE = 601
