//! Tests of the MSVC name helpers on names taken from real MSVC PDBs (debugpy's
//! run_code_on_dllmain_amd64, fixtures/msvc_*): undecoration, public matching under ICF, funclet
//! parents and member inlinee qualification.

use super::*;

#[test]
fn readable_undecorates_to_the_pdb_spelling() {
    // Each pair is a public symbol and the name of its `S_GPROC32` in the same PDB (debugpy's
    // run_code_on_dllmain_amd64, fixtures/msvc_toolchain).
    let pairs = [
        (
            "?_Throw_bad_array_new_length@std@@YAXXZ",
            "std::_Throw_bad_array_new_length",
        ),
        ("??1bad_alloc@std@@UEAA@XZ", "std::bad_alloc::~bad_alloc"),
        (
            "??$_Construct@$00PEBD@?$basic_string@DU?$char_traits@D@std@@V?$allocator@D@2@@std@@AEAAXQEBD_K@Z",
            "std::basic_string<char,std::char_traits<char>,std::allocator<char> >::_Construct<1,char const *>",
        ),
    ];
    for (decorated, procedure) in pairs {
        assert!(
            public_matches(decorated, procedure),
            "{decorated} -> {} vs {procedure}",
            readable(decorated)
        );
    }
    assert_eq!(
        readable("??1bad_alloc@std@@UEAA@XZ"),
        "std::bad_alloc::~bad_alloc"
    );
    assert_eq!(readable("main"), "main");
    // Not a valid decoration: kept as it is, never a panic.
    assert_eq!(readable("?@@@"), "?@@@");
}

#[test]
fn public_matching_tells_folded_overloads_apart() {
    let char_ptr = "??$_Construct@$00PEAD@?$basic_string@DU?$char_traits@D@std@@V?$allocator@D@2@@std@@AEAAXQEAD_K@Z";
    let const_char_ptr = "??$_Construct@$00PEBD@?$basic_string@DU?$char_traits@D@std@@V?$allocator@D@2@@std@@AEAAXQEBD_K@Z";
    let procedure = "std::basic_string<char,std::char_traits<char>,std::allocator<char> >::_Construct<1,char *>";
    assert!(public_matches(char_ptr, procedure));
    assert!(!public_matches(const_char_ptr, procedure));
    assert!(public_matches(
        "__scrt_stub_for_acrt_initialize",
        "__scrt_stub_for_acrt_initialize"
    ));
    assert!(!public_matches(
        "__acrt_initialize",
        "__scrt_stub_for_acrt_initialize"
    ));
}

#[test]
fn funclet_parents_come_from_the_name() {
    let cases = [
        (
            "`std::operator<<<std::char_traits<char> >'::`1'::dtor$0",
            Some("std::operator<<<std::char_traits<char> >"),
        ),
        (
            "`std::operator<<<std::char_traits<char> >'::`1'::catch$3",
            Some("std::operator<<<std::char_traits<char> >"),
        ),
        ("`RunCodeInThread'::`1'::dtor$0", Some("RunCodeInThread")),
        (
            "`dllmain_crt_process_detach'::`1'::fin$1",
            Some("dllmain_crt_process_detach"),
        ),
        ("`dllmain_dispatch'::`1'::filt$0", Some("dllmain_dispatch")),
        (
            "__scrt_is_nonwritable_in_current_image$filt$0",
            Some("__scrt_is_nonwritable_in_current_image"),
        ),
        ("std::bad_alloc::`scalar deleting destructor'", None),
        ("RunCodeInThread", None),
        ("price$usd$0", None),
        ("`f'::`1'::dtor$", None),
        ("`'::`1'::dtor$0", None),
        ("$filt$0", None),
    ];
    for (name, parent) in cases {
        assert_eq!(funclet_parent(name), parent, "{name}");
    }
}

#[test]
fn member_inlinees_are_qualified_with_their_class() {
    let string = "std::basic_string<char,std::char_traits<char>,std::allocator<char> >";
    assert_eq!(
        qualify_member(string, "{ctor}"),
        format!("{string}::basic_string")
    );
    assert_eq!(
        qualify_member(string, "{dtor}"),
        format!("{string}::~basic_string")
    );
    assert_eq!(qualify_member(string, "size"), format!("{string}::size"));
    assert_eq!(
        qualify_member("NotificationHelper", "{dtor}"),
        "NotificationHelper::~NotificationHelper"
    );
    assert_eq!(
        qualify_member("std::_Tree<std::_Tmap_traits<int,a::b> >::_Node", "{ctor}"),
        "std::_Tree<std::_Tmap_traits<int,a::b> >::_Node::_Node"
    );
}
