"""The generated code-page tables: shape, spot checks against MS-ASWBXML, and the recorded
differences between the spec's tag names and Debian libwbxml 0.11.8's."""

from __future__ import annotations

from protocols.activesync.wbxml import (
    Namespace,
    namespace_of,
    page_of,
    tag_at,
    tag_by_libwbxml_name,
    tag_named,
    tags_of,
)
from protocols.activesync.wbxml.codepages import NAMESPACES, TAGS

# MS-ASWBXML name vs libwbxml 0.11.8 name, for every token both know under different names.
# Only the token goes on the wire; the names matter when reading `wbxml2xml` output or
# writing `xml2wbxml` input (tests/activesync/wbxml_tool.py maps them).
MS_VS_LIBWBXML = {
    ("Contacts", 0x07): ("AssistantPhoneNumber", "AssistantTelephoneNumber"),
    ("Contacts", 0x0D): ("BusinessAddressCity", "BusinessCity"),
    ("Contacts", 0x0E): ("BusinessAddressCountry", "BusinessCountry"),
    ("Contacts", 0x0F): ("BusinessAddressPostalCode", "BusinessPostalCode"),
    ("Contacts", 0x10): ("BusinessAddressState", "BusinessState"),
    ("Contacts", 0x11): ("BusinessAddressStreet", "BusinessStreet"),
    ("Contacts", 0x21): ("HomeAddressCity", "HomeCity"),
    ("Contacts", 0x22): ("HomeAddressCountry", "HomeCountry"),
    ("Contacts", 0x23): ("HomeAddressPostalCode", "HomePostalCode"),
    ("Contacts", 0x24): ("HomeAddressState", "HomeState"),
    ("Contacts", 0x25): ("HomeAddressStreet", "HomeStreet"),
    ("Contacts", 0x2D): ("OtherAddressCity", "OtherCity"),
    ("Contacts", 0x2E): ("OtherAddressCountry", "OtherCountry"),
    ("Contacts", 0x2F): ("OtherAddressPostalCode", "OtherPostalCode"),
    ("Contacts", 0x30): ("OtherAddressState", "OtherState"),
    ("Contacts", 0x31): ("OtherAddressStreet", "OtherStreet"),
    ("Email", 0x19): ("ReplyTo", "Reply-To"),
    ("Email", 0x1D): ("DtStamp", "DTStamp"),
    ("Email", 0x29): ("Type", "Recurrence_Type"),
    ("Email", 0x2A): ("Until", "Recurrence_Until"),
    ("Email", 0x2B): ("Occurrences", "Recurrence_Occurrences"),
    ("Email", 0x2C): ("Interval", "Recurrence_Interval"),
    ("Email", 0x2D): ("DayOfWeek", "Recurrence_DayOfWeek"),
    ("Email", 0x2E): ("DayOfMonth", "Recurrence_DayOfMonth"),
    ("Email", 0x2F): ("WeekOfMonth", "Recurrence_WeekOfMonth"),
    ("Email", 0x30): ("MonthOfYear", "Recurrence_MonthOfYear"),
    ("Email", 0x3B): ("Status", "FlagStatus"),
    ("Calendar", 0x05): ("Timezone", "TimeZone"),
    ("Calendar", 0x09): ("Email", "Attendee_Email"),
    ("Calendar", 0x0A): ("Name", "Attendee_Name"),
    ("Calendar", 0x11): ("DtStamp", "DTStamp"),
    ("Calendar", 0x15): ("Deleted", "Exception_Deleted"),
    ("Calendar", 0x16): ("ExceptionStartTime", "Exception_StartTime"),
    ("Calendar", 0x19): ("OrganizerEmail", "Organizer_Email"),
    ("Calendar", 0x1A): ("OrganizerName", "Organizer_Name"),
    ("Calendar", 0x1C): ("Type", "Recurrence_Type"),
    ("Calendar", 0x1D): ("Until", "Recurrence_Until"),
    ("Calendar", 0x1E): ("Occurrences", "Recurrence_Occurrences"),
    ("Calendar", 0x1F): ("Interval", "Recurrence_Interval"),
    ("Calendar", 0x20): ("DayOfWeek", "Recurrence_DayOfWeek"),
    ("Calendar", 0x21): ("DayOfMonth", "Recurrence_DayOfMonth"),
    ("Calendar", 0x22): ("WeekOfMonth", "Recurrence_WeekOfMonth"),
    ("Calendar", 0x23): ("MonthOfYear", "Recurrence_MonthOfYear"),
    ("Calendar", 0x29): ("AttendeeStatus", "Attendee_Status"),
    ("Calendar", 0x2A): ("AttendeeType", "Attendee_Type"),
    ("Tasks", 0x0D): ("UtcDueDate", "UTCDueDate"),
    ("Tasks", 0x10): ("Type", "Recurrence_Type"),
    ("Tasks", 0x11): ("Start", "Recurrence_Start"),
    ("Tasks", 0x12): ("Until", "Recurrence_Until"),
    ("Tasks", 0x13): ("Occurrences", "Recurrence_Occurrences"),
    ("Tasks", 0x14): ("Interval", "Recurrence_Interval"),
    ("Tasks", 0x15): ("DayOfMonth", "Recurrence_DayOfMonth"),
    ("Tasks", 0x16): ("DayOfWeek", "Recurrence_DayOfWeek"),
    ("Tasks", 0x17): ("WeekOfMonth", "Recurrence_WeekOfMonth"),
    ("Tasks", 0x18): ("MonthOfYear", "Recurrence_MonthOfYear"),
    ("Tasks", 0x19): ("Regenerate", "Recurrence_Regenerate"),
    ("Tasks", 0x1A): ("DeadOccur", "Recurrence_DeadOccur"),
    ("Tasks", 0x1F): ("UtcStartDate", "UTCStartDate"),
    ("ValidateCert", 0x09): ("CheckCrl", "CheckCRL"),
    ("Provision", 0x10): ("RequireStorageCardEncryption", "DeviceEncryptionEnabled"),
    ("Settings", 0x1F): ("SMTPAddress", "SmtpAddress"),
    ("Settings", 0x2B): ("RightsManagementInformation", "ihsManagementInformation"),  # typo
    ("ComposeMail", 0x10): ("Mime", "MIME"),
    ("RightsManagement", 0x12): ("Owner", "RMOwner"),
    ("RightsManagement", 0x18): (
        "RemoveRightsManagementProtection",
        "RemoveRightsManagementDistribution",
    ),
}

# Current-spec tags libwbxml 0.11.8 does not know: `wbxml2xml` prints them as <unknown>.
LIBWBXML_GAPS = {
    ("MeetingResponse", 0x10),  # ProposedStartTime (16.0)
    ("MeetingResponse", 0x11),  # ProposedEndTime (16.0)
    ("Provision", 0x3B),  # AccountOnlyRemoteWipe (16.1)
} | {("Find", token) for token in (*range(0x05, 0x0F), *range(0x11, 0x1A), 0x20, 0x21, 0x22)}


def qualified(page: int) -> str:
    return NAMESPACES[page]


def test_twenty_six_pages_named_as_in_ms_aswbxml() -> None:
    assert len(NAMESPACES) == 26
    assert [str(member) for member in Namespace] == list(NAMESPACES)
    assert NAMESPACES[0] == "AirSync"
    assert NAMESPACES[17] == "AirSyncBase"
    assert NAMESPACES[20] == "ItemOperations"
    assert NAMESPACES[25] == "Find"
    for page, name in enumerate(NAMESPACES):
        assert page_of(name) == page
        assert namespace_of(page) == name
    assert namespace_of(26) is None
    assert page_of("Gal") is None


def test_every_page_has_tags_and_tokens_are_tag_tokens() -> None:
    assert len(TAGS) == 654
    for page in range(26):
        assert tags_of(NAMESPACES[page]), NAMESPACES[page]
    assert all(0x05 <= tag.token <= 0x3F for tag in TAGS)
    assert len({(tag.page, tag.token) for tag in TAGS}) == len(TAGS)
    assert len({(tag.page, tag.name) for tag in TAGS}) == len(TAGS)


def test_lookups_agree() -> None:
    for tag in TAGS:
        ns = NAMESPACES[tag.page]
        assert tag_at(tag.page, tag.token) == tag
        assert tag_named(ns, tag.name) == tag
        if tag.libwbxml_name is not None:
            assert tag_by_libwbxml_name(ns, tag.libwbxml_name) == tag
    assert tag_at(0, 0x04) is None
    assert tag_at(0, 0x3F) is None
    assert tag_at(26, 0x05) is None
    assert tag_named("AirSync", "Nope") is None


def test_spot_checks_against_the_spec() -> None:
    def token(ns: str, name: str) -> int:
        definition = tag_named(ns, name)
        assert definition is not None, name
        return definition.token

    assert token("AirSync", "Sync") == 0x05
    assert token("FolderHierarchy", "FolderSync") == 0x16
    assert token("FolderHierarchy", "SyncKey") == 0x12
    assert token("ComposeMail", "Mime") == 0x10
    assert token("Email2", "ConversationId") == 0x09
    assert token("Provision", "RequireStorageCardEncryption") == 0x10
    assert token("Provision", "AccountOnlyRemoteWipe") == 0x3B
    # The checklist's pitfall: Find's picture tokens are 0x20-0x22, not 0x1A-0x1C.
    assert token("Find", "MaxPictures") == 0x20
    assert token("Find", "MaxSize") == 0x21
    assert token("Find", "Picture") == 0x22
    assert tag_at(25, 0x1A) is None


def test_recorded_name_differences_are_exactly_the_tables() -> None:
    differences = {
        (qualified(tag.page), tag.token): (tag.ms_name, tag.libwbxml_name)
        for tag in TAGS
        if tag.ms_name and tag.libwbxml_name and tag.ms_name != tag.libwbxml_name
    }
    assert differences == MS_VS_LIBWBXML
    for (ns, token), (ms_name, _) in MS_VS_LIBWBXML.items():
        definition = tag_at(page_of(ns) or 0, token)
        assert definition is not None
        assert definition.name == ms_name  # the MS name is canonical


def test_recorded_libwbxml_gaps() -> None:
    gaps = {(qualified(t.page), t.token) for t in TAGS if t.ms_name and not t.libwbxml_name}
    assert gaps == LIBWBXML_GAPS


def test_legacy_tokens_keep_a_name_and_are_marked() -> None:
    legacy = [tag for tag in TAGS if tag.legacy]
    assert legacy
    assert all(tag.ms_name is None and tag.name for tag in legacy)
    assert tag_named("AirSync", "Version") is not None  # 2.5-era, still decodable
    assert all(tag.legacy for tag in TAGS if tag.page == 3)  # AirNotify is unused
